//! OWNER H6: control socket server and client.
