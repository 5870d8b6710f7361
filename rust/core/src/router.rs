//! (router: filled in by its issue.)
