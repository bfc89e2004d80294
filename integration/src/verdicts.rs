//! Facts a guest reported (`FACT <key> <value>` lines, see
//! [`vm::Console::facts`](crate::vm::Console::facts)) and the verdicts a
//! test draws from them: one named PASS or FAIL, with its detail, per check.
//! A fact the guest never reported fails the checks that read it.

use std::collections::BTreeMap;

use serde_json::Value;

/// The facts of one run and the verdicts drawn so far.
#[derive(Debug, Default)]
pub struct Verdicts {
    pub facts: BTreeMap<String, String>,
    /// `(name, Ok(detail) | Err(detail))`, in the order drawn.
    pub list: Vec<(String, Result<String, String>)>,
}

impl Verdicts {
    pub fn new(facts: BTreeMap<String, String>) -> Self {
        Verdicts {
            facts,
            list: Vec::new(),
        }
    }

    /// The value of a fact.
    pub fn fact(&self, key: &str) -> Result<&str, String> {
        self.facts
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("the guest reported no {key}"))
    }

    /// A fact as JSON (an empty value is `null`).
    pub fn json(&self, key: &str) -> Result<Value, String> {
        let f = self.fact(key)?;
        if f.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(f).map_err(|e| format!("{key} is not JSON ({e}): {f}"))
    }

    /// The exit code a fact starts with (`"0"`, `"1 {...}"`, `"0 10.1.2.3"`).
    pub fn code(&self, key: &str) -> Result<i64, String> {
        let f = self.fact(key)?;
        f.split_whitespace()
            .next()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("{key}: no exit code in {f:?}"))
    }

    /// Records a verdict.
    pub fn push(&mut self, name: &str, r: Result<String, String>) {
        self.list.push((name.to_string(), r));
    }

    /// `VERDICT <name> PASS|FAIL <detail>` lines, one per verdict.
    pub fn lines(&self) -> Vec<String> {
        self.list
            .iter()
            .map(|(name, r)| match r {
                Ok(d) => format!("VERDICT {name} PASS {d}"),
                Err(d) => format!("VERDICT {name} FAIL {d}"),
            })
            .collect()
    }

    /// Names of the failed verdicts.
    pub fn failed(&self) -> Vec<&str> {
        self.list
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_malformed_facts_fail() {
        let mut v = Verdicts::new(BTreeMap::from([
            ("a".to_string(), "0 x".to_string()),
            ("j".to_string(), "{bad".to_string()),
        ]));
        assert_eq!(v.code("a"), Ok(0));
        assert!(v.code("b").is_err());
        assert!(v.json("j").is_err());
        let r = v.code("b").map(|c| c.to_string());
        v.push("b", r);
        v.push("a", Ok("fine".into()));
        assert_eq!(v.failed(), ["b"]);
        assert!(v.lines()[0].starts_with("VERDICT b FAIL the guest reported no b"));
    }
}
