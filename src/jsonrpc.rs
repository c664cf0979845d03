//! JSON-RPC 2.0 as ferrum speaks it to Electrum clients, operators (the admin RPC and
//! `ferrum-rpc`) and, later, peers: error codes, the request envelope, responses and
//! notifications, one JSON value per newline-terminated line.

use serde::{Deserialize, Deserializer};
use serde_json::error::Category;
use serde_json::value::RawValue;
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

/// A request's id exactly as the client wrote it, echoed byte for byte: a number beyond 64 bits,
/// `1.50` or `1e2` would not survive a trip through `serde_json::Value`, and JSON-RPC asks for
/// the id back unchanged. Only a string, a number or null is an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id(String);

impl Id {
    pub fn null() -> Id {
        Id("null".into())
    }

    /// An id ferrum picks itself (tests, clients).
    pub fn number(n: u64) -> Id {
        Id(n.to_string())
    }

    /// The id's JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    fn from_raw(raw: &RawValue) -> Option<Id> {
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'"' | b'n') => Some(Id(text.to_string())),
            // A number no client could read back (1e999 overflows every float) is no id.
            Some(b'-' | b'0'..=b'9') => serde_json::from_str::<f64>(text).is_ok().then(|| Id(text.to_string())),
            _ => None,
        }
    }
}

/// A request as it arrived: its id (`None` for a notification), method and parameters.
#[derive(Debug)]
pub struct Envelope {
    pub id: Option<Id>,
    pub method: String,
    pub params: Option<Value>,
}

/// One message on a connection: a request (or why it is none), or a batch of them, each still
/// unparsed so a batch can stop early without parsing the rest.
pub enum Message<'a> {
    Request(Result<Envelope, (Id, RpcError)>),
    Batch(Vec<&'a RawValue>),
}

/// The fields of a request object, the id kept raw. A field that is present, even as null,
/// is `Some` (`"id": null` is a request to answer, not a notification).
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "present")]
    method: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    params: Option<Value>,
}

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Reads one message; an error is a parse error (not JSON, or not UTF-8).
pub fn parse_message(text: &[u8]) -> Result<Message<'_>, RpcError> {
    let parse_error = |e: serde_json::Error| RpcError::new(PARSE_ERROR, format!("invalid JSON: {e}"));
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice::<Vec<&RawValue>>(text).map(Message::Batch).map_err(parse_error),
        Some(b'{') => match serde_json::from_slice::<Fields>(text) {
            Ok(fields) => Ok(Message::Request(envelope(fields))),
            // Valid JSON, but not a request object's fields (a duplicate key).
            Err(e) if e.classify() == Category::Data => {
                Ok(Message::Request(Err((Id::null(), RpcError::new(INVALID_REQUEST, format!("bad request: {e}"))))))
            }
            Err(e) => Err(parse_error(e)),
        },
        // As a value, so a number out of range (1e99999) is a parse error, as everywhere else.
        _ => match serde_json::from_slice::<Value>(text) {
            Ok(_) => Ok(Message::Request(Err((Id::null(), not_an_object())))),
            Err(e) => Err(parse_error(e)),
        },
    }
}

/// One request of a batch.
pub fn parse_request(raw: &RawValue) -> Result<Envelope, (Id, RpcError)> {
    if !raw.get().starts_with('{') {
        return Err((Id::null(), not_an_object()));
    }
    match serde_json::from_str::<Fields>(raw.get()) {
        Ok(fields) => envelope(fields),
        Err(e) => Err((Id::null(), RpcError::new(INVALID_REQUEST, format!("bad request: {e}")))),
    }
}

fn not_an_object() -> RpcError {
    RpcError::new(INVALID_REQUEST, "a request must be a JSON object")
}

/// Checks the request's fields; on error, the id to answer with (null when unusable) and why.
fn envelope(f: Fields) -> Result<Envelope, (Id, RpcError)> {
    let id = match f.id {
        None => None,
        Some(raw) => match Id::from_raw(raw) {
            Some(id) => Some(id),
            None => {
                return Err((
                    Id::null(),
                    RpcError::new(INVALID_REQUEST, "id must be a string, a finite number or null"),
                ))
            }
        },
    };
    match f.method {
        Some(Value::String(method)) => Ok(Envelope { id, method, params: f.params }),
        _ => Err((id.unwrap_or_else(Id::null), RpcError::new(INVALID_REQUEST, "a request needs a method string"))),
    }
}

pub fn request(id: u64, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

pub fn result_response(id: &Id, result: Value) -> String {
    format!("{{\"id\":{},\"jsonrpc\":\"2.0\",\"result\":{result}}}", id.0)
}

pub fn error_response(id: &Id, e: &RpcError) -> String {
    let error = json!({"code": e.code, "message": e.message});
    format!("{{\"error\":{error},\"id\":{},\"jsonrpc\":\"2.0\"}}", id.0)
}

pub fn notification(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

/// The head of a response written as text (`{"jsonrpc":"2.0","result":` and then the result):
/// long answers are written straight into one string, and `finish_response` appends the id,
/// so the megabytes before it are written once.
pub const RESULT_HEAD: &str = "{\"jsonrpc\":\"2.0\",\"result\":";

/// Completes a response started with `RESULT_HEAD` and a result.
pub fn finish_response(mut text: String, id: &Id) -> String {
    text.push_str(",\"id\":");
    text.push_str(&id.0);
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

    fn one(text: &str) -> Result<Envelope, (Id, RpcError)> {
        match parse_message(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            Ok(Message::Batch(_)) => panic!("a batch"),
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn envelopes() {
        let e = one(r#"{"id": 7, "method": "m", "params": [1]}"#).unwrap();
        assert_eq!((e.id, e.method.as_str(), e.params), (Some(Id::number(7)), "m", Some(json!([1]))));
        assert!(one(r#"{"method": "n"}"#).unwrap().id.is_none(), "a notification");
        assert_eq!(one(r#"{"id": null, "method": "n"}"#).unwrap().id, Some(Id::null()), "null is an id");
        assert_eq!(one("5").unwrap_err().1.code, INVALID_REQUEST);
        assert_eq!(one(r#"{"id": [1], "method": "m"}"#).unwrap_err().1.code, INVALID_REQUEST);
        assert_eq!(one(r#"{"id": 1, "id": 2, "method": "m"}"#).unwrap_err().1.code, INVALID_REQUEST);
        assert_eq!(
            one(r#"{"id": 1e999, "method": "m"}"#).unwrap_err(),
            (Id::null(), RpcError::new(INVALID_REQUEST, "id must be a string, a finite number or null"))
        );
        let (id, e) = one(r#"{"id": "x", "method": 5}"#).unwrap_err();
        assert_eq!((id.as_json(), e.code), (r#""x""#, INVALID_REQUEST));
        for bad in ["{", "{\"id\": 1, \"method\": \"m\"} x", "nul", "\u{ff}"] {
            assert_eq!(parse_message(bad.as_bytes()).err().map(|e| e.code), Some(PARSE_ERROR), "{bad}");
        }
        assert_eq!(parse_message(b"{\"method\": \"\xff\"}").err().map(|e| e.code), Some(PARSE_ERROR), "not UTF-8");
        let Ok(Message::Batch(items)) = parse_message(br#" [{"id": 1, "method": "a"}, 7, {"id": 2}]"#) else {
            panic!("a batch")
        };
        assert_eq!(parse_request(items[0]).unwrap().method, "a");
        assert_eq!(parse_request(items[1]).unwrap_err().1.code, INVALID_REQUEST);
        assert_eq!(parse_request(items[2]).unwrap_err().0, Id::number(2));
    }

    #[test]
    fn ids_are_echoed_byte_for_byte() {
        for id in [
            "18446744073709551617",
            "1000000000000000000000000000000",
            "-9223372036854775809",
            "1.50",
            "1e2",
            "-0",
            r#""\u00e9\n""#,
            "null",
            "0",
        ] {
            let e = one(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"server.ping","params":[]}}"#)).unwrap();
            let got = e.id.expect("an id");
            assert_eq!(got.as_json(), id);
            let answer = result_response(&got, Value::Null);
            assert!(answer.contains(&format!("\"id\":{id},")), "{answer}");
            assert!(error_response(&got, &RpcError::bad_request("x")).contains(&format!("\"id\":{id},")));
            assert!(finish_response(format!("{RESULT_HEAD}1"), &got).ends_with(&format!("\"id\":{id}}}")));
        }
    }

    #[test]
    fn responses_round_trip() {
        let text = finish_response(format!("{RESULT_HEAD}[1,2]"), &Id::number(9));
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json!({"jsonrpc": "2.0", "id": 9, "result": [1, 2]}));
        assert_eq!(parse_response(&text).unwrap(), Ok(json!([1, 2])));
        let err = error_response(&Id::number(1), &RpcError::bad_request("no"));
        assert_eq!(parse_response(&err).unwrap(), Err(RpcError::bad_request("no")));
        assert!(parse_response("garbage").is_err());
    }
}
