//! ferrum-rpc: the operator's command-line client for ferrum's admin RPC.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ferrum::admin::{text, AdminCommand};
use serde_json::Value;

#[derive(Parser)]
#[command(version, about = "Send a command to a running ferrum's admin RPC (SERVICES rpc://)")]
struct Args {
    /// Admin RPC host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Admin RPC port.
    #[arg(short, long, env = "RPC_PORT", default_value_t = 8000)]
    port: u16,
    #[command(subcommand)]
    command: AdminCommand,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (method, params) = args.command.to_request();
    // A reorg or a long query may take minutes.
    let answer = ferrum::jsonrpc::call_blocking((&args.host, args.port), method, params, Duration::from_secs(900));
    match answer {
        Ok(Ok(v)) => {
            let lines = match (&args.command, &v) {
                (AdminCommand::Sessions, _) => text::sessions_lines(&v),
                (AdminCommand::Groups, _) => text::groups_lines(&v),
                (AdminCommand::Peers, _) => text::peers_lines(&v),
                (AdminCommand::Query { json: false, .. }, Value::Array(lines)) => {
                    lines.iter().map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_string)).collect()
                }
                _ => vec![serde_json::to_string_pretty(&v).unwrap_or_default()],
            };
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("ferrum-rpc: {}", e.message);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!(
                "ferrum-rpc: cannot talk to ferrum's admin RPC at {}:{}: {e} (is ferrum running? is --port/RPC_PORT right?)",
                args.host, args.port
            );
            ExitCode::FAILURE
        }
    }
}
