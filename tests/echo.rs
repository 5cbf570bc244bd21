//! Echo: every byte comes back, in order, unchanged.

mod common;

#[test]
fn echoes_one_message() {
    let server = common::start(common::config());
    let mut client = server.connect();
    common::assert_echo(&mut client, b"hello, netgrace\n");
    drop(client);
    let report = server.shutdown();
    assert_eq!(report.accepted, 1);
    assert_eq!(report.bytes_echoed, 16);
}
