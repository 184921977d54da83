//! `steward-testkit stop`: stops the shared test cluster (`.ci/test` calls it
//! when the suite is done).
#![forbid(unsafe_code)]

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("stop") => steward_testkit::stop_shared(),
        _ => {
            eprintln!("usage: steward-testkit stop");
            std::process::exit(2);
        }
    }
}
