//! Read by rustfmt only, never compiled. An optional part's module is declared under its
//! feature, with this file as the path it would take without it:
//!
//! ```text
//! #[cfg(feature = "http")]
//! #[cfg_attr(not(feature = "http"), path = "part_left_out.rs")]
//! mod http;
//! ```
//!
//! rustfmt does not evaluate `cfg`: it formats every file a module may be in, and refuses a
//! module for which it finds none. In a project generated without the part, its file is gone
//! and rustfmt reads this one instead; with the part, it formats the part's own file as well.
//! The compiler never sees this path: without the feature, the module is not there at all.
