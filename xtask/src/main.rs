//! `cargo xtask`: the project's build, run, test and bench entry points.
//! Every command first makes sure its prerequisites are installed.
mod prereqs;
mod tasks;

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
    /// Build, then run `fail2xdp` with these arguments (default subcommand: run).
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
    /// Packets/s under a live flood beside nftables, ipset, iptables and
    /// xdp-filter (long: about 15 minutes).
    Packets,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Prereqs => prereqs::ensure(prereqs::Need::All)?,
        Cmd::BuildEbpf => tasks::build_ebpf()?,
        Cmd::Build => tasks::build_release()?,
        Cmd::Run { args } => return tasks::run(args),
        Cmd::Test { args } => return tasks::test(args),
        Cmd::Bench { which } => {
            let set = match which {
                Bench::All => tasks::Benches {
                    dataplane: true,
                    ingest: true,
                    packets: true,
                },
                Bench::Dataplane => tasks::Benches {
                    dataplane: true,
                    ..Default::default()
                },
                Bench::Ingest => tasks::Benches {
                    ingest: true,
                    ..Default::default()
                },
                Bench::Packets => tasks::Benches {
                    packets: true,
                    ..Default::default()
                },
            };
            return tasks::bench(set);
        }
    }
    Ok(ExitCode::SUCCESS)
}
