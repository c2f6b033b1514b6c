//! `ferry cni` (and `ferry` with no arguments when CNI_COMMAND is set, as
//! a runtime execs `$CNI_PATH/ferry`): the CNI plugin. Reads the
//! environment and stdin, prints the result or error object on stdout.

use std::io::Read;
use std::process::ExitCode;

/// The call comes in CNI_* variables and the network config on stdin
/// (see the CNI spec); nothing on the command line.
#[derive(clap::Args)]
pub struct Args {}

/// Whether this process was started as a CNI plugin: no arguments and
/// CNI_COMMAND set.
pub fn invoked_as_plugin() -> bool {
    std::env::args_os().len() == 1 && std::env::var_os("CNI_COMMAND").is_some()
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    let env = std::env::vars().collect();
    let mut stdin = String::new();
    // VERSION may come with nothing on stdin; an unreadable stdin is a
    // decode error the plugin reports.
    let _ = std::io::stdin().read_to_string(&mut stdin);
    let reply = ferry_cni::run(&env, &stdin);
    print!("{}", reply.stdout);
    Ok(if reply.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
