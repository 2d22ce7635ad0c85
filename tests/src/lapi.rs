//! A real CrowdSec Local API (Debian's `crowdsec`, LAPI only: `-no-cs`) in
//! a network namespace of its own, with its own configuration, data
//! directory and database, reached from agents' namespaces over veth
//! pairs this harness creates. Stopped, its namespace and files removed, on
//! Drop; it dies with the test process even when that is killed (its
//! parent-death signal), and its namespace is named like every other
//! (`f2x-<pid>-...`), so a dead run's leftover is cleaned by the next.
//!
//! Link `i` is 203.0.113.(240 + 4i)/30: the LAPI at `.241+4i`, the agent's
//! side at `.242+4i` (at most four agents per LAPI).

use std::{
    fs,
    net::{Ipv4Addr, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::netns::{Netns, command_in, unique_name};

static LINKS: AtomicU32 = AtomicU32::new(0);
const MAX_LINKS: u8 = 4;

/// What the LAPI tests need installed; a missing one fails the test.
pub fn require_crowdsec() {
    for tool in ["crowdsec", "cscli"] {
        if crate::preflight::which(tool).is_none() {
            panic!(
                "`{tool}` is not installed: the CrowdSec tests run a real Local API \
                 (Debian's crowdsec; `cargo xtask test` installs it)"
            );
        }
    }
}

#[derive(Debug)]
pub struct Lapi {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    links: u8,
    /// Serves https with a private CA and takes client certificates.
    tls: bool,
    /// Last: the namespace goes after the process.
    pub ns: Netns,
}

impl Lapi {
    /// Starts a LAPI listening on every address of its namespace, with a
    /// machine for `cscli` (whose decisions go through the LAPI).
    pub fn start() -> Result<Self> {
        Self::start_with(false)
    }

    /// The same over https: a private CA ([`Lapi::ca`]) signs the server's
    /// certificate (for every link address and 127.0.0.1), and client
    /// certificates ([`Lapi::client_cert`]) of OU `bouncer-ou` authenticate
    /// bouncers, `agent-ou` machines.
    pub fn start_tls() -> Result<Self> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Result<Self> {
        crate::require_privileges();
        require_crowdsec();
        let ns = Netns::create(&unique_name("f2x"))?;
        ns.ip(&["link", "set", "lo", "up"])?;
        let dir = tempfile::Builder::new().prefix("f2x-lapi-").tempdir()?;
        // Inside its own namespace any port is free; a random one anyway.
        let port = 20_000 + (std::process::id() * 7919 + LINKS.load(Ordering::Relaxed)) % 40_000;
        let mut lapi = Lapi {
            child: None,
            port: port as u16,
            dir,
            links: 0,
            tls,
            ns,
        };
        if tls {
            lapi.make_ca()?;
        }
        lapi.write_config()?;
        lapi.spawn()?;
        lapi.cscli(&[
            "machines",
            "add",
            "cscli",
            "--password",
            "cscli-test-password",
            "-f",
            &lapi
                .path("local_api_credentials.yaml")
                .display()
                .to_string(),
            "--url",
            &format!("{}://127.0.0.1:{}", lapi.scheme(), lapi.port),
        ])?;
        Ok(lapi)
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    fn openssl(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .context("running openssl (is it installed?)")?;
        if !out.status.success() {
            bail!(
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// A key and a certificate signed by the CA: `NAME.key`, `NAME.pem`.
    fn signed(&self, name: &str, subject: &str, ext: &str) -> Result<()> {
        let (key, csr, pem, extf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        fs::write(self.path(&extf), ext)?;
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ])?;
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &extf,
        ])
    }

    fn make_ca(&self) -> Result<()> {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=fail2xdp test CA",
        ])?;
        let mut san = String::from("subjectAltName=IP:127.0.0.1");
        for i in 0..MAX_LINKS {
            san.push_str(&format!(",IP:203.0.113.{}", 241 + 4 * i));
        }
        self.signed(
            "server",
            "/CN=lapi",
            &format!("{san}\nextendedKeyUsage=serverAuth\n"),
        )
    }

    /// The CA's certificate (PEM), for the agents' `ca_file`.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A client certificate and key of `ou`, copied into `dir` as
    /// `client.pem` and `client.key`.
    pub fn client_cert(&self, ou: &str, cn: &str, dir: &Path) -> Result<()> {
        let name = format!("client-{cn}");
        self.signed(
            &name,
            &format!("/OU={ou}/CN={cn}"),
            "extendedKeyUsage=clientAuth\n",
        )?;
        fs::copy(self.path(&format!("{name}.pem")), dir.join("client.pem"))?;
        fs::copy(self.path(&format!("{name}.key")), dir.join("client.key"))?;
        Ok(())
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn config(&self) -> PathBuf {
        self.path("config.yaml")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.path("log/crowdsec_api.log")).unwrap_or_default()
            + &fs::read_to_string(self.path("log/crowdsec.log")).unwrap_or_default()
            + &fs::read_to_string(self.path("out.log")).unwrap_or_default()
    }

    fn write_config(&self) -> Result<()> {
        let d = self.dir.path().display().to_string();
        for sub in ["data", "hub", "log", "notifications"] {
            fs::create_dir_all(self.path(sub))?;
        }
        let profiles = "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\ndecisions:\n - type: ban\n   duration: 4h\non_success: break\n";
        fs::write(self.path("profiles.yaml"), profiles)?;
        fs::write(self.path("simulation.yaml"), "simulation: off\n")?;
        fs::write(self.path("acquis.yaml"), "")?;
        let tls = if self.tls {
            format!(
                "    tls:
      cert_file: {d}/server.pem
      key_file: {d}/server.key
      client_verification: VerifyClientCertIfGiven
      ca_cert_path: {d}/ca.pem
      bouncers_allowed_ou:
        - bouncer-ou
      agents_allowed_ou:
        - agent-ou
"
            )
        } else {
            String::new()
        };
        let cfg = format!(
            "common:
  daemonize: false
  log_media: file
  log_level: info
  log_dir: {d}/log/
config_paths:
  config_dir: {d}/
  data_dir: {d}/data/
  simulation_path: {d}/simulation.yaml
  hub_dir: {d}/hub/
  index_path: {d}/hub/.index.json
  notification_dir: {d}/notifications/
  plugin_dir: /usr/lib/crowdsec/plugins/
crowdsec_service:
  acquisition_path: {d}/acquis.yaml
  parser_routines: 1
cscli:
  output: json
db_config:
  log_level: info
  type: sqlite
  db_path: {d}/data/crowdsec.db
  use_wal: true
  flush:
    max_items: 500000
    max_age: 7d
plugin_config:
  user: nobody
  group: nogroup
api:
  client:
    insecure_skip_verify: {skip}
    credentials_path: {d}/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: 0.0.0.0:{port}
    profiles_path: {d}/profiles.yaml
    trusted_ips:
      - 127.0.0.1
      - ::1
{tls}prometheus:
  enabled: false
",
            port = self.port,
            // cscli, inside the namespace, need not check the test CA.
            skip = self.tls,
        );
        fs::write(self.config(), cfg)?;
        Ok(())
    }

    /// Starts `crowdsec -no-cs` and waits until it accepts connections.
    pub fn spawn(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("the LAPI already runs");
        }
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("out.log"))?;
        let mut cmd = command_in(&self.ns.path(), "crowdsec")?;
        cmd.arg("-c")
            .arg(self.config())
            .arg("-no-cs")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: prctl only sets this child's parent-death signal; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().context("starting crowdsec")?);
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = self.port;
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!("crowdsec exited with {st}; its log:\n{}", self.log());
            }
            let up = self
                .ns
                .run(move || TcpStream::connect(("127.0.0.1", port)).is_ok())?;
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the LAPI did not listen within 30 s; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (SIGTERM, then SIGKILL): the agents lose their LAPI.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                child.kill().ok();
                child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGKILL: the LAPI dies without a word to anyone.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        child.kill().context("killing crowdsec")?;
        child.wait()?;
        Ok(())
    }

    /// Joins `agent_ns` to the LAPI over a new veth pair; the agent's URL.
    pub fn link(&mut self, agent_ns: &Netns) -> Result<String> {
        if self.links >= MAX_LINKS {
            bail!("at most {MAX_LINKS} agents per LAPI");
        }
        let i = self.links;
        self.links += 1;
        let n = LINKS.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}{n:x}", std::process::id());
        let (here, there) = (format!("cl{id}"), format!("ca{id}"));
        let lapi_addr = Ipv4Addr::new(203, 0, 113, 241 + 4 * i);
        let agent_addr = Ipv4Addr::new(203, 0, 113, 242 + 4 * i);
        let out = Command::new("ip")
            .args(["link", "add", &here, "netns", self.ns.name()])
            .args([
                "type",
                "veth",
                "peer",
                "name",
                &there,
                "netns",
                agent_ns.name(),
            ])
            .output()
            .context("running ip")?;
        if !out.status.success() {
            bail!(
                "creating the veth to the LAPI: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.ns
            .ip(&["addr", "add", &format!("{lapi_addr}/30"), "dev", &here])?;
        self.ns.ip(&["link", "set", &here, "up"])?;
        agent_ns.ip(&["addr", "add", &format!("{agent_addr}/30"), "dev", &there])?;
        agent_ns.ip(&["link", "set", &there, "up"])?;
        Ok(format!("{}://{lapi_addr}:{}/", self.scheme(), self.port))
    }

    /// `cscli -c CONFIG args...` in the LAPI's namespace; its stdout.
    pub fn cscli(&self, args: &[&str]) -> Result<String> {
        let out = command_in(&self.ns.path(), "cscli")?
            .arg("-c")
            .arg(self.config())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running cscli")?;
        if !out.status.success() {
            bail!(
                "cscli {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A bouncer key (`cscli bouncers add NAME -o raw`), written to `file`.
    pub fn bouncer_key(&self, name: &str, file: &Path) -> Result<String> {
        let key = self.cscli(&["bouncers", "add", name, "-o", "raw"])?;
        let key = key.trim().to_owned();
        if key.is_empty() {
            bail!("cscli printed no bouncer key");
        }
        fs::write(file, format!("{key}\n"))?;
        Ok(key)
    }

    /// A machine login (`cscli machines add NAME --password P -f FILE`)
    /// whose credentials file names `url`.
    pub fn machine(&self, name: &str, url: &str, file: &Path) -> Result<()> {
        self.cscli(&[
            "machines",
            "add",
            name,
            "--password",
            &format!("{name}-test-password"),
            "-f",
            &file.display().to_string(),
            "--url",
            url,
        ])
        .map(drop)
    }

    /// `cscli decisions add --ip|--range VALUE --duration D`.
    pub fn add_decision(&self, value: &str, duration: &str, extra: &[&str]) -> Result<()> {
        let flag = if value.contains('/') {
            "--range"
        } else {
            "--ip"
        };
        let mut args = vec!["decisions", "add", flag, value, "--duration", duration];
        args.extend_from_slice(extra);
        self.cscli(&args).map(drop)
    }

    pub fn delete_decision(&self, value: &str) -> Result<()> {
        let flag = if value.contains('/') {
            "--range"
        } else {
            "--ip"
        };
        self.cscli(&["decisions", "delete", flag, value]).map(drop)
    }

    /// `cscli decisions import` of a CSV of addresses: one alert holding
    /// every decision, origin `cscli-import` (a blocklist).
    pub fn import(&self, values: &[String], duration: &str) -> Result<()> {
        let file = self.path("import.csv");
        let mut text = String::with_capacity(values.len() * 16 + 8);
        text.push_str("value\n");
        for v in values {
            text.push_str(v);
            text.push('\n');
        }
        fs::write(&file, text)?;
        self.cscli(&[
            "decisions",
            "import",
            "-i",
            &file.display().to_string(),
            "--duration",
            duration,
        ])
        .map(drop)
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("warning: stopping the LAPI: {e:#}");
        }
        if std::thread::panicking() {
            eprintln!("--- LAPI log ---\n{}", self.log());
        }
    }
}
