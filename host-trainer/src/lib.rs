//! Ground-side trainer: learns the onboard models from rover images and writes model bundles.
//!
//! Modules by concern: [`augment`] (seeded tensor augmentation), [`config`] (serde training configuration), [`data`] (MSL layout and
//! image folders), [`model`] (autoencoder and classifier), [`train`] (training loops),
//! [`cluster`] (k-means), [`evaluate`] (metrics on a labeled split), [`figures`] (PNG figures), [`export`] (ONNX
//! writer), [`calibrate`] and [`quantize`] (int8 post-training quantization), [`quantize_bundle`] (adds the int8 precisions to a bundle), [`bundle_writer`] (bundle folder and model card), [`device`] (device choice), [`features`] (cached frozen-backbone features), [`probe`] (linear probe), [`protocol`] (the shift-aware development protocol).

pub mod augment;
pub mod bundle_writer;
pub mod calibrate;
pub mod cluster;
pub mod config;
pub mod data;
pub mod device;
pub mod effnet;
pub mod encoders;
pub mod evaluate;
pub mod export;
pub mod export_stage;
pub mod features;
pub mod figures;
pub mod losses;
pub mod model;
pub mod probe;
pub mod probe_recipe;
pub mod progress;
pub mod protocol;
pub mod provenance;
pub mod quantize;
pub mod quantize_bundle;
pub mod report;
pub mod run;
pub mod semi;
pub mod semi_train;
pub mod temperature;
pub mod train;
pub mod trained;
pub mod whiten;
