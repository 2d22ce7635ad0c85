//! A damaged, unwritable or full state store (issue 14 item 4): the agent
//! keeps enforcing what is in the maps, says exactly what is wrong, never
//! deletes the damaged file (it moves it aside), and recovers what it can.
//! Real agent, real pins, real packets (root; `cargo build -p fail2xdp`).

use std::{fs, path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use fail2xdp::control::Request;
use fail2xdp_tests::{Lab, watch::wait_for};
use serde_json::Value;

const N: u64 = 10;
const SMTP: u16 = 25;

fn problems(st: &Value) -> String {
    st["protection"]["problems"].to_string()
}

fn wait_answer(lab: &Lab) -> Result<()> {
    wait_for("the agent to answer", Duration::from_secs(30), || {
        Ok(lab.agent.client().call(&Request::Ping).is_ok())
    })
}

#[test]
fn a_damaged_store_is_moved_aside_and_the_maps_bans_recorded_again() -> Result<()> {
    for case in ["truncated", "zeroed", "garbage"] {
        let mut lab = Lab::start()?;
        lab.agent.ban("198.51.100.7", &["--for", "1h"])?;
        lab.agent.stop()?;
        let db = lab.agent.state_dir().join(fail2xdp::state::DB_FILE);
        let len = fs::metadata(&db)?.len() as usize;
        let bytes: Vec<u8> = match case {
            "truncated" => fs::read(&db)?[..len / 3].to_vec(),
            "zeroed" => vec![0; len],
            _ => (0..len).map(|i| (i * 7919 % 251) as u8).collect(),
        };
        fs::write(&db, &bytes)?;
        lab.agent.spawn()?;
        wait_answer(&lab)?;
        let log = lab.agent.log();
        assert!(log.contains("was damaged"), "{case}: {log}");
        assert!(!log.contains("panicked"), "{case}: {log}");
        let moved: Vec<PathBuf> = fs::read_dir(lab.agent.state_dir())?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains(".damaged-"))
            .collect();
        assert_eq!(moved.len(), 1, "{case}: {moved:?}");
        assert_eq!(
            fs::read(&moved[0])?,
            bytes,
            "{case}: the damaged file was changed"
        );
        let st = lab.agent.status_json()?;
        assert_eq!(st["protection"]["state"], "degraded", "{case}: {st}");
        assert!(problems(&st).contains("damaged"), "{case}: {st}");
        assert_eq!(
            lab.delivered(&lab.syn("198.51.100.7", SMTP), N)?,
            0,
            "{case}"
        );
        // What the maps held is recorded again: it survives a reboot.
        lab.agent.stop()?;
        lab.agent.cli(&["detach"])?;
        lab.agent.spawn()?;
        wait_answer(&lab)?;
        assert_eq!(
            lab.delivered(&lab.syn("198.51.100.7", SMTP), N)?,
            0,
            "{case}: lost after the reboot"
        );
        let e: Value =
            serde_json::from_str(&lab.agent.cli(&["explain", "198.51.100.7", "--json"])?)?;
        let left = e["bans"][0]["enforced_remaining_secs"]
            .as_u64()
            .with_context(|| format!("{case}: {e}"))?;
        assert!((3000..=3660).contains(&left), "{case}: {left}s left");
    }
    Ok(())
}

/// A tmpfs mounted at a test's state dir, unmounted on every exit path.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, opts: &str) -> Result<Self> {
        fs::create_dir_all(at)?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(at)
            .status()?;
        if !st.success() {
            bail!("mount -t tmpfs -o {opts} at {}: {st}", at.display());
        }
        Ok(Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn an_unwritable_or_full_state_dir_keeps_bans_enforced_and_says_so() -> Result<()> {
    for (case, opts) in [("read-only", "ro,size=1m"), ("full", "size=64k")] {
        let mut lab = Lab::start()?;
        lab.agent.stop()?;
        fs::remove_dir_all(lab.agent.state_dir())?;
        let _m = Mount::tmpfs(&lab.agent.state_dir(), opts)?;
        if case == "full" {
            // Whatever is left is taken before the agent comes.
            let _ = fs::write(lab.agent.state_dir().join("filler"), vec![0u8; 64 << 10]);
        }
        lab.agent.spawn()?;
        wait_answer(&lab)?;
        lab.agent.ban("198.51.100.9", &[])?;
        assert_eq!(
            lab.delivered(&lab.syn("198.51.100.9", SMTP), N)?,
            0,
            "{case}"
        );
        let st = lab.agent.status_json()?;
        assert_eq!(st["protection"]["state"], "degraded", "{case}: {st}");
        let p = problems(&st);
        assert!(p.contains("state store"), "{case}: {p}");
        assert!(
            !lab.agent.log().contains("panicked"),
            "{case}: {}",
            lab.agent.log()
        );
        lab.agent.stop()?;
    }
    Ok(())
}
