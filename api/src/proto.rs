//! The control-plane protocol (`proto/weir/v1alpha1/discovery.proto`): generated messages,
//! clients and servers.
#![allow(missing_docs, unused_qualifications, clippy::all)]

tonic::include_proto!("weir.v1alpha1");
