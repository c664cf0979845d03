//! JSON-RPC 2.0 as ferrum speaks it to Electrum clients, operators (the admin RPC and
//! `ferrum-rpc`) and, later, peers: error codes, the request envelope, responses and
//! notifications, one JSON value per newline-terminated line.

use serde_json::{json, Value};

/// JSON-RPC and Electrum error codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
pub const EXCESSIVE_RESOURCE_USAGE: i64 = -101;
pub const SERVER_BUSY: i64 = -102;
/// A bad argument value (ElectrumX's BAD_REQUEST).
pub const BAD_REQUEST: i64 = 1;
/// The daemon failed or refused (ElectrumX's DAEMON_ERROR).
pub const DAEMON_ERROR: i64 = 2;
pub const HISTORY_TOO_LARGE: i64 = 10001;

/// An error answer, and whether the connection closes after it.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    /// Close the connection after sending the error.
    pub close: bool,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into(), close: false }
    }

    pub fn bad_request(message: impl Into<String>) -> RpcError {
        RpcError::new(BAD_REQUEST, message)
    }

    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }

    pub fn closing(mut self) -> RpcError {
        self.close = true;
        self
    }
}

/// A request as it arrived: its id (`None` for a notification), method and parameters.
#[derive(Debug)]
pub struct Envelope {
    pub id: Option<Value>,
    pub method: String,
    pub params: Option<Value>,
}

/// Checks the request envelope; on error, the id to answer with (null when unusable) and why.
pub fn parse_envelope(v: Value) -> Result<Envelope, (Value, RpcError)> {
    let Value::Object(mut obj) = v else {
        return Err((Value::Null, RpcError::new(INVALID_REQUEST, "a request must be a JSON object")));
    };
    let id = obj.remove("id");
    if id.as_ref().is_some_and(|i| !(i.is_string() || i.is_number() || i.is_null())) {
        return Err((Value::Null, RpcError::new(INVALID_REQUEST, "id must be a string, a number or null")));
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        _ => {
            let id = id.unwrap_or(Value::Null);
            return Err((id, RpcError::new(INVALID_REQUEST, "a request needs a method string")));
        }
    };
    Ok(Envelope { id, method, params: obj.remove("params") })
}

pub fn request(id: u64, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

pub fn result_response(id: &Value, result: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()
}

pub fn error_response(id: &Value, e: &RpcError) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}}).to_string()
}

pub fn notification(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

/// The head of a response written as text (`{"jsonrpc":"2.0","result":` and then the result):
/// long answers are written straight into one string, and `finish_response` appends the id,
/// so the megabytes before it are written once.
pub const RESULT_HEAD: &str = "{\"jsonrpc\":\"2.0\",\"result\":";

/// Completes a response started with `RESULT_HEAD` and a result.
pub fn finish_response(mut text: String, id: &Value) -> String {
    text.push_str(",\"id\":");
    text.push_str(&id.to_string());
    text.push('}');
    text
}

/// The result or error of a response line, for clients (`ferrum-rpc`, the tests, peers).
pub fn parse_response(line: &str) -> Result<Result<Value, RpcError>, String> {
    let resp: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {:.200}", line.trim()))?;
    match resp.get("error") {
        Some(err) if !err.is_null() => {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
            let message = err.get("message").and_then(Value::as_str).unwrap_or("error").to_string();
            Ok(Err(RpcError::new(code, message)))
        }
        _ => Ok(Ok(resp.get("result").cloned().unwrap_or(Value::Null))),
    }
}

/// Calls a newline-delimited JSON-RPC server once, blocking (the admin client `ferrum-rpc` and
/// the tests).
pub fn call_blocking(
    addr: (&str, u16),
    method: &str,
    params: Value,
    timeout: std::time::Duration,
) -> Result<Result<Value, RpcError>, String> {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut line = request(1, method, params);
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).map_err(|e| e.to_string())?;
    if reply.is_empty() {
        return Err("the server closed the connection without answering".into());
    }
    parse_response(&reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes() {
        let e = parse_envelope(json!({"id": 7, "method": "m", "params": [1]})).unwrap();
        assert_eq!((e.id, e.method.as_str(), e.params), (Some(json!(7)), "m", Some(json!([1]))));
        assert!(parse_envelope(json!({"method": "n"})).unwrap().id.is_none(), "a notification");
        assert_eq!(parse_envelope(json!([1])).unwrap_err().1.code, INVALID_REQUEST);
        assert_eq!(parse_envelope(json!({"id": [1], "method": "m"})).unwrap_err().1.code, INVALID_REQUEST);
        let (id, e) = parse_envelope(json!({"id": "x", "method": 5})).unwrap_err();
        assert_eq!((id, e.code), (json!("x"), INVALID_REQUEST));
    }

    #[test]
    fn responses_round_trip() {
        let text = finish_response(format!("{RESULT_HEAD}[1,2]"), &json!(9));
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json!({"jsonrpc": "2.0", "id": 9, "result": [1, 2]}));
        assert_eq!(parse_response(&text).unwrap(), Ok(json!([1, 2])));
        let err = error_response(&json!(1), &RpcError::bad_request("no"));
        assert_eq!(parse_response(&err).unwrap(), Err(RpcError::bad_request("no")));
        assert!(parse_response("garbage").is_err());
    }
}
