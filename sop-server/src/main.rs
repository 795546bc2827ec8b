//! `sop`: the SOP-rs reference server and command-line tool (see the
//! `sop_server` library for everything it does).

fn main() -> std::process::ExitCode {
    sop_server::main_entry()
}
