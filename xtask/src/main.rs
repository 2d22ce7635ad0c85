//! `cargo xtask`: the project's build, run, test and bench entry points.
//! Every command first makes sure its prerequisites are installed.
mod prereqs;
mod tasks;
mod testlog;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "fail2xdp build, run, test and bench")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install whatever is missing (apt packages, nightly rust-src, bpf-linker, bpffs).
    Prereqs,
    /// Build the XDP object only (nightly, bpfel-unknown-none).
    BuildEbpf,
    /// Build target/release/fail2xdp with the XDP object embedded.
    Build,
    /// Build, then run the agent: `fail2xdp run` with these arguments.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit, integration, and the privileged netns/XDP tests.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Man pages from the command line's definition (fail2xdp.1 and one
    /// per command), into target/man or DIR.
    Man {
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Run one fuzz target (fuzz/, cargo-fuzz on the nightly toolchain);
    /// its crashes land in target/fuzz/artifacts/TARGET.
    Fuzz {
        /// A target of fuzz/Cargo.toml (`all`: each in turn).
        target: String,
        /// How long to fuzz (per target).
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Parallel fuzzing processes (libFuzzer's -fork).
        #[arg(long, default_value_t = 1)]
        jobs: u32,
        /// libFuzzer's random seed (default: a new one each run).
        #[arg(long)]
        seed: Option<u32>,
        /// Start from the corpus in the tree alone, as `cargo xtask test`
        /// does (with `--seconds 60 --seed 1`: its very run).
        #[arg(long)]
        fresh: bool,
    },
    /// Run benchmarks and print their tables.
    Bench {
        #[arg(value_enum, default_value = "all")]
        which: Bench,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Bench {
    All,
    /// Per-packet cost by BPF_PROG_TEST_RUN, beside xdp-filter.
    Dataplane,
    /// Log ingest beside fail2ban-regex, detection-to-drop latency.
    Ingest,
    /// Restoring 1,000,000 stored bans after a reboot.
    Restore,
    /// A real MX under an AUTH flood: no protection, fail2ban, fail2xdp.
    Mx,
    /// A ban on one host dropped on another through CrowdSec's Local API.
    Fleet,
    /// Packets/s under a live flood beside nftables, ipset, iptables and
    /// xdp-filter (long: about 15 minutes).
    Packets,
    /// 1,000,000 and 10,000,000 SASL failures from distinct sources: the
    /// agent's peak RSS against its max_hosts bound, evictions, attackers banned.
    Spray,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Prereqs => prereqs::ensure(prereqs::Need::All)?,
        Cmd::BuildEbpf => tasks::build_ebpf()?,
        Cmd::Build => tasks::build_release()?,
        Cmd::Run { args } => return tasks::run(args),
        Cmd::Test { args } => return tasks::test(args),
        Cmd::Man { out } => tasks::man(out)?,
        Cmd::Fuzz {
            target,
            seconds,
            jobs,
            seed,
            fresh,
        } => {
            return tasks::fuzz(
                &target,
                &tasks::FuzzRun {
                    seconds,
                    jobs,
                    seed,
                    fresh,
                },
            );
        }
        Cmd::Bench { which } => {
            let all = [
                tasks::Bench::Dataplane,
                tasks::Bench::Ingest,
                tasks::Bench::Restore,
                tasks::Bench::Mx,
                tasks::Bench::Fleet,
                tasks::Bench::Packets,
                tasks::Bench::Spray,
            ];
            let which: &[tasks::Bench] = match which {
                Bench::All => &all,
                Bench::Dataplane => &all[0..1],
                Bench::Ingest => &all[1..2],
                Bench::Restore => &all[2..3],
                Bench::Mx => &all[3..4],
                Bench::Fleet => &all[4..5],
                Bench::Packets => &all[5..6],
                Bench::Spray => &all[6..7],
            };
            return tasks::bench(which);
        }
    }
    Ok(ExitCode::SUCCESS)
}
