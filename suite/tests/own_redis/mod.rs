//! A Redis server of one test's own, on a free port, that the test may stop, restart or hang
//! (`DEBUG SLEEP` is enabled for local clients) without disturbing any other test.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Redis of this test's own (on a free port), so stopping it disturbs no other test.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn start(port: u16) -> Option<OwnRedis> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // `DEBUG SLEEP` (a hung server) from this machine only.
                "--enable-debug-command",
                "local",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut r = OwnRedis { port, child: Some(child) };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(5) {
                r.stop();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(r)
    }

    /// `SHUTDOWN NOSAVE`, as an operator would; waits until the process is gone.
    pub fn stop(&mut self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the server on `port` answers a `PING` within 50 ms (false while it sleeps).
pub fn answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut socket) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
    let mut reply = [0u8; 16];
    socket.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok() && socket.read(&mut reply).is_ok_and(|n| n > 0)
}
