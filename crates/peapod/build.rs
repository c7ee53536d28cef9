//! Links the peapod binary as a non-PIE executable.
//!
//! Every container has a monitor process running this binary. As a PIE, the loader's
//! relocations dirty ~0.5 MiB of `.data.rel.ro` in each of them (private memory per container);
//! linked at a fixed address, those pages stay clean and shared (measured in docs/perf.md).

fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
