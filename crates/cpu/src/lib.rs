//! CPU work and the bridges that reach it from async code.
//!
//! The rule this template teaches is **async for I/O, sync for CPU**. The functions in
//! [`primes`] are plain synchronous Rust and know nothing of tokio; only the two bridges,
//! [`CpuPool`] (rayon) and [`BlockingPool`] (`spawn_blocking`), touch the runtime.
//!
//! # Where each kind of work goes
//!
//! The folklore says "use `spawn_blocking` for anything slow". It is half right: `spawn_blocking`
//! is for code that *waits*, and a pool of up to 512 threads is the wrong tool for code that
//! *computes*.
//!
//! | work | goes to | why |
//! |------|---------|-----|
//! | network I/O, timers, channels | a tokio task | it spends its time waiting, and tokio parks a waiting task for free; a task should reach an `.await` every 10 to 100 µs ([Alice Ryhl, "Async: What is blocking?"](https://ryhl.io/blog/async-what-is-blocking/)) |
//! | CPU-bound work (hashing, parsing big inputs, the PRIMES sieve) | rayon, through [`CpuPool::spawn`] | a fixed pool sized to the cores runs it in parallel without starving the tokio workers; `spawn_blocking` would start a thread per job up to 512 and oversubscribe the CPU ([`tokio::task::spawn_blocking`](https://docs.rs/tokio/latest/tokio/task/fn.spawn_blocking.html): "if you are running CPU-bound code, consider rayon") |
//! | blocking I/O (`std::fs`, a sync database driver) | `spawn_blocking`, through [`BlockingPool::run`] | the thread only waits, so many may be alive at once, but not without a bound ([tokio's `task` module docs](https://docs.rs/tokio/latest/tokio/task/index.html#blocking-and-yielding)) |
//! | a loop that runs forever (a sync consumer, a device poller) | its own named `std::thread` | it would hold a blocking-pool thread for good and delay runtime shutdown, which waits for blocking tasks ([`spawn_blocking`](https://docs.rs/tokio/latest/tokio/task/fn.spawn_blocking.html): "not suitable for tasks that run forever") |
//!
//! A job on either bridge that panics comes back as [`JobError::Panicked`]; neither bridge can
//! interrupt a job that has started, so a dropped future discards only the result, unless the
//! work takes a [`Stop`] ([`CpuPool::spawn_stoppable`]) and gives up when it is set.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // CPU work: to rayon, awaited through a oneshot.
//! let cpu = cpu::CpuPool::new(2).unwrap();
//! assert_eq!(cpu.spawn(|| cpu::primes::count_below(1_000_000)).await, Ok(78_498));
//!
//! // Blocking I/O: to spawn_blocking, at most 8 at once.
//! let blocking = cpu::BlockingPool::new(8);
//! let temp = std::env::temp_dir();
//! assert_eq!(blocking.run(move || temp.exists()).await, Ok(true));
//!
//! // A loop that runs forever: its own thread, with a name that shows up in debuggers.
//! let (tx, rx) = std::sync::mpsc::channel::<u64>();
//! let consumer = std::thread::Builder::new()
//!     .name("consumer".into())
//!     .spawn(move || rx.iter().sum::<u64>())
//!     .unwrap();
//! tx.send(1).unwrap();
//! drop(tx); // ends the loop
//! assert_eq!(consumer.join().unwrap(), 1);
//! # }
//! ```

mod blocking_bridge;
mod error;
pub mod primes;
mod rayon_bridge;
mod stop;

pub use blocking_bridge::BlockingPool;
pub use error::JobError;
pub use rayon::ThreadPoolBuildError;
pub use rayon_bridge::{CpuPool, CpuTask, lower_priority};
pub use stop::{Stop, Stopped};
