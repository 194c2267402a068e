//! For tests that run one of their own tests again in a child process (to
//! kill it, cut its power, or give it another umask).

use std::process::Command;

/// This test binary, set to run only its test `test` (also when it is
/// `#[ignore]`d, as the tests that need root are), on one thread, with its
/// output shown; the caller adds environment and pipes.
pub fn this_test(test: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("test binary"));
    c.args([
        test,
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    c
}

/// xorshift64*: enough randomness for picking calls, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
