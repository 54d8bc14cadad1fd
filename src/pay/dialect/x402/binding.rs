//! The request binding of x402 `exact` on Lightning (`lnbtc`): the invoice's description hash
//! commits to the request it pays for, as SHA-256 of the RFC 8785 (JCS) canonical JSON of a
//! binding object the CLIENT builds from its own request. Two profiles: `http:1` (method, URL,
//! body digest, the server-named headers' value digests) and `mcp:1` (MCP server, tool name,
//! arguments, the server-named `_meta` members' digests).
//!
//! Invariants: the object is built only from the request the agent sent (never from what the
//! server echoes); a name list or input outside the profile's rules is an error, never skipped
//! or repaired; numbers are serialized as JCS does (IEEE-754 doubles), so an integer beyond
//! 2^53 binds as its nearest double (the upstream SDKs' `bind_as_double` outcome).

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// The `http:1` domain tag.
pub const HTTP_DOMAIN: &str = "x402:exact:lnbtc:bolt11:http:1";
/// The `mcp:1` domain tag.
pub const MCP_DOMAIN: &str = "x402:exact:lnbtc:bolt11:mcp:1";

/// Why a binding cannot be built: the spec's `invalid_exact_lnbtc_request_binding`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingError(pub String);

impl std::fmt::Display for BindingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid request binding: {}", self.0)
    }
}

fn err<T>(what: impl Into<String>) -> Result<T, BindingError> {
    Err(BindingError(what.into()))
}

/// A binding object, canonicalized, with its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// `UTF8(JCS(binding))`: the bytes hashed.
    pub canonical: String,
    /// `SHA-256(canonical)`: what `extra.requestHash` and the invoice's description hash hold.
    pub hash: [u8; 32],
}

impl Binding {
    fn of(object: &Value) -> Result<Binding, BindingError> {
        let canonical = serde_json_canonicalizer::to_string(object)
            .map_err(|e| BindingError(format!("not canonicalizable JSON: {e}")))?;
        let hash = Sha256::digest(canonical.as_bytes()).into();
        Ok(Binding { canonical, hash })
    }

    /// The digest as 64 lowercase hex characters.
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

/// SHA-256 of `0x00` for an absent value, of `0x01 || bytes` for a present one, in hex.
fn value_hash(bytes: Option<&[u8]>) -> String {
    let mut h = Sha256::new();
    match bytes {
        None => h.update([0u8]),
        Some(b) => {
            h.update([1u8]);
            h.update(b);
        }
    }
    hex::encode(h.finalize())
}

/// An RFC 9110 token (methods, header names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks an absolute `http`/`https` (or, for `mcp:1` servers, any scheme) URI in ASCII
/// syntax with no user information or fragment, well-formed percent escapes and a port that
/// fits 16 bits. Nothing is normalized: the caller hashes the string as given.
pub fn check_absolute_uri(uri: &str, http_only: bool) -> Result<(), BindingError> {
    if !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return err(format!(
            "the URI {uri:?} is not printable ASCII without spaces"
        ));
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return err(format!("the URI {uri:?} is not absolute"));
    };
    let scheme_ok = !scheme.is_empty()
        && scheme.as_bytes()[0].is_ascii_alphabetic()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok || (http_only && scheme != "http" && scheme != "https") {
        return err(format!("the URI {uri:?} is not an http or https URL"));
    }
    if uri.contains('#') {
        return err(format!("the URI {uri:?} carries a fragment"));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.contains('@') {
        return err(format!("the URI {uri:?} carries user information"));
    }
    let host_end = if authority.starts_with('[') {
        match authority.find(']') {
            Some(i) => i + 1,
            None => return err(format!("the URI {uri:?} has an unclosed IPv6 literal")),
        }
    } else {
        authority.find(':').unwrap_or(authority.len())
    };
    let (host, port) = authority.split_at(host_end);
    if host.is_empty() {
        return err(format!("the URI {uri:?} names no host"));
    }
    if let Some(port) = port.strip_prefix(':') {
        if !port.is_empty() && port.parse::<u16>().is_err() {
            return err(format!("the URI {uri:?} has an invalid port"));
        }
    } else if !port.is_empty() {
        return err(format!("the URI {uri:?} has a malformed authority"));
    }
    let bytes = uri.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return err(format!("the URI {uri:?} has a malformed percent escape"));
        }
        if b"\"<>\\^`{|}".contains(b) {
            return err(format!(
                "the URI {uri:?} has a character URI syntax does not allow"
            ));
        }
    }
    Ok(())
}

/// The `http:1` bound header names: lowercase tokens in strictly ascending byte order, never
/// `payment-signature`.
pub fn check_header_names(names: &[String]) -> Result<(), BindingError> {
    for (i, name) in names.iter().enumerate() {
        if !is_token(name) || name.bytes().any(|b| b.is_ascii_uppercase()) {
            return err(format!(
                "bound header {name:?} is not a lowercase field name"
            ));
        }
        if name == "payment-signature" {
            return err("payment-signature cannot be a bound header");
        }
        if i > 0 && names[i - 1].as_bytes() >= name.as_bytes() {
            return err("bound header names must be unique and in ascending order");
        }
    }
    Ok(())
}

/// One `http:1` request, as the client sends it.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// The method, case preserved.
    pub method: &'a str,
    /// The absolute target URI (`@target-uri`).
    pub url: &'a str,
    /// The content bytes (empty when there is no body).
    pub body: &'a [u8],
}

/// Builds the `http:1` binding. `lines` gives every field line of a header name (any case) in
/// order, `None` when absent.
pub fn http<'h>(
    request: HttpRequest<'_>,
    bound: &[String],
    lines: impl Fn(&str) -> Vec<&'h [u8]>,
) -> Result<Binding, BindingError> {
    if !is_token(request.method) {
        return err(format!("the method {:?} is not a token", request.method));
    }
    check_absolute_uri(request.url, true)?;
    check_header_names(bound)?;
    let mut headers = Vec::with_capacity(bound.len());
    for name in bound {
        let found = lines(name);
        let hash = if found.is_empty() {
            value_hash(None)
        } else {
            let mut joined = Vec::new();
            for (i, line) in found.iter().enumerate() {
                if line
                    .iter()
                    .any(|b| !(b.is_ascii_graphic() || *b == b' ' || *b == b'\t'))
                {
                    return err(format!(
                        "the value of bound header {name} is not ASCII text"
                    ));
                }
                if i > 0 {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(line.trim_ascii());
            }
            value_hash(Some(&joined))
        };
        headers.push(json!({ "name": name, "valueHash": hash }));
    }
    Binding::of(&json!({
        "domain": HTTP_DOMAIN,
        "method": request.method,
        "url": request.url,
        "bodyHash": hex::encode(Sha256::digest(request.body)),
        "headers": headers,
    }))
}

/// Compares strings as JCS orders object members (UTF-16 code units).
fn jcs_less(a: &str, b: &str) -> bool {
    a.encode_utf16().lt(b.encode_utf16())
}

/// The `mcp:1` bound metadata names: non-empty, unique, in JCS order, never `x402/payment` or
/// `progressToken`.
pub fn check_metadata_names(names: &[String]) -> Result<(), BindingError> {
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return err("a bound metadata name is empty");
        }
        if name == "x402/payment" || name == "progressToken" {
            return err(format!("{name} cannot be bound metadata"));
        }
        if i > 0 && !jcs_less(&names[i - 1], name) {
            return err("bound metadata names must be unique and in JCS order");
        }
    }
    Ok(())
}

/// Builds the `mcp:1` binding of a `tools/call` whose `params` are given, for `server` (the
/// MCP endpoint the client connected to).
pub fn mcp(server: &str, params: &Value, bound: &[String]) -> Result<Binding, BindingError> {
    check_absolute_uri(server, false)?;
    check_metadata_names(bound)?;
    let Some(params) = params.as_object() else {
        return err("tools/call params are not an object");
    };
    let name = match params.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n,
        _ => return err("tools/call params.name is not a non-empty string"),
    };
    let arguments = match params.get("arguments") {
        None => Value::Object(Map::new()),
        Some(Value::Object(a)) => Value::Object(a.clone()),
        Some(_) => return err("tools/call params.arguments is not an object"),
    };
    let empty = Map::new();
    let meta = match params.get("_meta") {
        None => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return err("tools/call params._meta is not an object"),
    };
    let mut metadata = Vec::with_capacity(bound.len());
    for name in bound {
        let hash = match meta.get(name) {
            None => value_hash(None),
            Some(v) => {
                let canonical = serde_json_canonicalizer::to_vec(v)
                    .map_err(|e| BindingError(format!("_meta.{name}: {e}")))?;
                value_hash(Some(&canonical))
            }
        };
        metadata.push(json!({ "name": name, "valueHash": hash }));
    }
    Binding::of(&json!({
        "domain": MCP_DOMAIN,
        "server": server,
        "method": "tools/call",
        "name": name,
        "arguments": arguments,
        "metadata": metadata,
    }))
}

/// Parses JSON as the binding's data model allows: an object with a member name twice is
/// refused (serde_json would keep the last one silently, and a server may read the first).
pub fn parse_strict(bytes: &[u8]) -> Result<Value, BindingError> {
    use serde::de::DeserializeSeed as _;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict
        .deserialize(&mut de)
        .map_err(|e| BindingError(e.to_string()))?;
    de.end().map_err(|e| BindingError(e.to_string()))?;
    Ok(value)
}

/// A JSON value whose objects have unique member names.
struct Strict;

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(Strict)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON without duplicate member names")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Strict)?;
            if out.insert(key.clone(), value).is_some() {
                return Err(serde::de::Error::custom(format!(
                    "the member name {key:?} appears twice"
                )));
            }
        }
        Ok(Value::Object(out))
    }
}
