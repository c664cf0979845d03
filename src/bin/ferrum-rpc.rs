//! ferrum-rpc: the operator's command-line client for ferrum's admin RPC.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

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
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Heights, sync state, daemon and database summary.
    Getinfo,
    /// Force the index back N blocks with undo data and re-sync (for testing reorg handling).
    Reorg {
        #[arg(default_value_t = 3)]
        count: u32,
    },
    /// History, unspent outputs and balance of addresses, hex scripts or script hashes.
    Query {
        #[arg(required = true)]
        items: Vec<String>,
        /// Most history entries and outputs to show per item.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// One row per connected Electrum session.
    Sessions,
    /// Flush the index and shut ferrum down.
    Stop,
}

fn call(host: &str, port: u16, method: &str, params: Value) -> Result<Value, String> {
    let mut stream = TcpStream::connect((host, port)).map_err(|e| {
        format!(
            "cannot connect to ferrum's admin RPC at {host}:{port}: {e} (is ferrum running? is --port/RPC_PORT right?)"
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(900))).ok();
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    stream.write_all(format!("{req}\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(|e| e.to_string())?;
    let resp: Value = serde_json::from_str(&line).map_err(|e| format!("bad reply from ferrum: {e}"))?;
    match resp.get("error") {
        Some(err) if !err.is_null() => Err(err.get("message").and_then(Value::as_str).unwrap_or("error").to_string()),
        _ => Ok(resp.get("result").cloned().unwrap_or(Value::Null)),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (method, params) = match &args.command {
        Command::Getinfo => ("getinfo", json!([])),
        Command::Reorg { count } => ("reorg", json!([count])),
        Command::Query { items, limit } => ("query", json!([items, limit])),
        Command::Sessions => ("sessions", json!([])),
        Command::Stop => ("stop", json!([])),
    };
    match call(&args.host, args.port, method, params) {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferrum-rpc: {e}");
            ExitCode::FAILURE
        }
    }
}
