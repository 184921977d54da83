//! The test cluster from the shell:
//! - `steward-testkit stop`: stops the shared test cluster (`.ci/test` calls it
//!   when the suite is done);
//! - `steward-testkit start DIR [--durable]`, `database DIR`, `stop DIR`: a
//!   cluster kept in DIR for the benchmarks (`bench/run.py --backend postgres`);
//!   `database` prints the URL of a new, empty database on it.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use steward_testkit::Cluster;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["stop"] => steward_testkit::stop_shared(),
        ["stop", dir] => steward_testkit::stop_at(&PathBuf::from(dir)),
        ["start", dir] => drop(Cluster::persistent(PathBuf::from(dir), false)),
        ["start", dir, "--durable"] => drop(Cluster::persistent(PathBuf::from(dir), true)),
        ["database", dir] => {
            let cluster = Cluster::persistent(PathBuf::from(dir), false);
            let url = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(cluster.create_kept_database()));
            match url {
                Ok(url) => println!("{url}"),
                Err(e) => {
                    eprintln!("steward-testkit: {e}");
                    std::process::exit(1);
                }
            }
        }
        _ => {
            eprintln!("usage: steward-testkit stop [DIR] | start DIR [--durable] | database DIR");
            std::process::exit(2);
        }
    }
}
