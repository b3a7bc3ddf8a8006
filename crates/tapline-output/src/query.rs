//! Query strings (`a=1&b=x%2Fy`): the pairs, percent- and plus-decoded. Read by HAR's
//! `queryString` and the web view's parameters.

/// `key=value` pairs of a query string, percent- and plus-decoded.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k), decode(v))
    })
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_decoded_and_bad_escapes_kept() {
        let pairs: Vec<_> = query_pairs("a=1&b=x%2Fy+z&&c=%zz&d").collect();
        assert_eq!(
            pairs,
            [("a", "1"), ("b", "x/y z"), ("c", "%zz"), ("d", "")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }
}
