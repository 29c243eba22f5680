pub mod gguf_writer;
pub mod random_model;
pub mod reference;
