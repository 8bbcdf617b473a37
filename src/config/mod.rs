//! Configuration: Java .properties loading, config providers, typed worker and connector configs.

pub mod properties;
pub mod providers;
pub mod secret;

pub use secret::Secret;
