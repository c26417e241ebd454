//! The ExternalJWTSigner messages, servers and clients generated from proto/externaljwt.

/// Package `v1`: what kube-apiserver 1.34 and later dial.
pub mod v1 {
    tonic::include_proto!("v1");
}

/// Package `v1alpha1`: what kube-apiserver 1.32 and 1.33 dial.
pub mod v1alpha1 {
    tonic::include_proto!("v1alpha1");
}
