//! The guides: how netgrace works and why, beyond the API.
//!
//! Each is a file of the repository's `docs/` folder, shipped with the crate and shown here as it
//! is, so that the API docs can link to it:
//!
//! - [`architecture`]: the modules, the token space, who owns which buffer, the memory bound, and
//!   the vocabulary (*turn*, *drain*, *lingering close*, *forced*, *backpressure*);
//! - [`shutdown`]: the three ways to stop (graceful, hand-over, immediate), step by step, beside
//!   Go's, nginx's and tokio's;
//! - [`restart`]: the process model, the restart without downtime, and the library API an
//!   embedder uses for it.
//!
//! Their links name files of the source tree (`shutdown.md`, `../src/reactor.rs`), so they lead
//! somewhere when the files are read in the repository, not on this site: here, the other guides
//! are the items above, and the sources are under the crate's "Source" menu. The event loop turn
//! by turn, the design decisions, the robustness tests, the labs and the benchmarks are in the
//! repository's `docs/` only, to keep the package small; so are the hard edges
//! (`docs/hard-edges.md`: each place where the kernel or TCP trips a naive loop, the function that
//! handles it and the test that proves it).

// The guides are markdown written for the repository and edited often: rustdoc's checks of links,
// HTML and code blocks are for the API docs, and must not fail a build over a guide's prose.

#[doc = include_str!("../docs/architecture.md")]
#[allow(rustdoc::all)]
pub mod architecture {}

#[doc = include_str!("../docs/shutdown.md")]
#[allow(rustdoc::all)]
pub mod shutdown {}

#[doc = include_str!("../docs/restart.md")]
#[allow(rustdoc::all)]
pub mod restart {}
