//! Placeholder: written by the SSE-parser work.
