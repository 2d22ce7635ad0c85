//! Shared harness for the integration tests: network namespaces, veth pairs, packet generation.
