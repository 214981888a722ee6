//! pipeline-core
