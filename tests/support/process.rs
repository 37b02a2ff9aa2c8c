//! A child process that cannot outlive the test: [`Process`] starts a program under a small
//! `sh` supervisor, sends its output to a log file, signals it by pid, and kills it on drop.
//!
//! Killing on drop is not enough on its own: a test binary stopped by Ctrl-C, a CI timeout or
//! an abort runs no destructors, and a Traefik left behind keeps its port. So the supervisor
//! reads its stdin, a pipe whose only writer is this process, and kills the program when the
//! pipe closes, which the kernel does however the test process ends. (`PR_SET_PDEATHSIG` would
//! need `unsafe`, which the crate forbids.)

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The supervisor. `$1` is the log file, the rest is the program and its arguments. It prints
/// the program's pid, exits with the program's status, and kills the program (SIGKILL) as soon
/// as its own stdin reaches end of file.
const SUPERVISOR: &str = r#"
log="$1"; shift
exec 3<&0
"$@" </dev/null >>"$log" 2>&1 3<&- &
pid=$!
echo "$pid"
( read -r line <&3; kill -KILL "$pid" 2>/dev/null ) &
watchdog=$!
exec 3<&-
wait "$pid" 2>/dev/null; status=$?
kill "$watchdog" 2>/dev/null
exit "$status"
"#;

/// A running program and its log file.
pub struct Process {
    name: String,
    supervisor: Child,
    /// The write end of the supervisor's stdin; dropping it kills the program.
    lifeline: Option<ChildStdin>,
    pid: u32,
    log: PathBuf,
}

impl Process {
    /// Starts `command` (its program, arguments, environment and working directory are used;
    /// its stdio is not) with stdout and stderr appended to `log`. `name` labels messages.
    pub fn spawn(name: &str, command: &Command, log: &Path) -> Process {
        let program = command.get_program();
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(SUPERVISOR).arg("supervisor").arg(log).arg(program).args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => sh.env(key, value),
                None => sh.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            sh.current_dir(dir);
        }
        let mut supervisor = sh
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `sh` to supervise {name}: {e}"));
        let lifeline = supervisor.stdin.take();
        let stdout = supervisor.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the pid from the supervisor");
        let pid = line.trim().parse().unwrap_or_else(|_| {
            panic!("the supervisor of {name} printed {line:?} instead of a pid; is {program:?} runnable?")
        });
        Process { name: name.to_owned(), supervisor, lifeline, pid, log: log.to_owned() }
    }

    /// The program's pid (not the supervisor's).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the program wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// `Some(status)` once the program has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.supervisor.try_wait().expect("try_wait on the supervisor")
    }

    /// Sends `signal` ("HUP", "TERM", ...) to the program. Panics if it has exited.
    pub fn signal(&mut self, signal: &str) {
        if let Some(status) = self.exit_status() {
            // The log is printed when `self` drops during the panic.
            panic!("cannot send SIG{signal} to {}: it has exited ({status})", self.name);
        }
        let sent = Command::new("sh")
            .arg("-c")
            .arg(r#"kill -s "$1" "$2""#)
            .arg("kill")
            .arg(signal)
            .arg(self.pid.to_string())
            .status()
            .expect("run `kill` through sh");
        assert!(sent.success(), "kill -s {signal} {} ({}) failed", self.pid, self.name);
    }

    /// Waits up to `timeout` for the program to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the program (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        self.lifeline.take();
        if self.wait_timeout(Duration::from_secs(5)).is_none() {
            // The supervisor itself is stuck; take it down too. Its program got SIGKILL already
            // or gets it when the pipe closes.
            let _ = self.supervisor.kill();
            let _ = self.supervisor.wait();
        }
    }

    /// The program's name, pid, log file and log, for a failure message.
    pub fn report(&self) -> String {
        format!(
            "----- {} (pid {}) log {} -----\n{}\n----- end of {} log -----",
            self.name,
            self.pid,
            self.log.display(),
            self.log(),
            self.name
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
    }
}
