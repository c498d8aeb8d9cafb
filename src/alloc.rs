//! The process allocator: jemalloc, unprefixed, so it also serves the PJRT plugin's `malloc`.
//!
//! XLA CPU allocates each execution's temp buffer (78 MB for gpt-tiny's train step) and frees
//! it at the end; glibc hands such sizes to `mmap`/`munmap`, so every step touched ~20k fresh
//! pages (a page fault each, ~13% of the run in system time). jemalloc built with
//! `dirty_decay_ms:-1` (`.cargo/config.toml`) keeps freed pages and reuses them: page faults
//! per step drop ~10×. `MALLOC_CONF` in the environment still overrides it.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
