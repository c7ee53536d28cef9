//! The decoders that read untrusted request bodies never panic: a fixed corpus of valid inputs,
//! each mutated thousands of ways by a seeded generator (so every run tests the same inputs),
//! goes through the protobuf decoder, the manifest decoder, admission and the patch code.
//! Longer fuzzing is on demand (cargo fuzz over the same functions).

use peapod_api::http::admission::{admit_create, FieldValidation};
use peapod_api::http::registry::lookup;
use peapod_api::patch::{apply_patch, PatchType};
use serde_json::{json, Value};

/// xorshift64*: deterministic, good enough to spread mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(4) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out.truncate(i);
            }
            2 => {
                let i = rng.below(out.len() + 1);
                out.insert(i, rng.next() as u8);
            }
            _ if out.len() > 2 => {
                let i = rng.below(out.len() - 1);
                let j = i + rng.below(out.len() - i);
                let chunk = out[i..j].to_vec();
                out.extend_from_slice(&chunk);
            }
            _ => {}
        }
    }
    out
}

fn protobuf_corpus() -> Vec<Vec<u8>> {
    let cm = b"k8s\0\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x1b\x0a\x11\x0a\x01x\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x06\x0a\x01a\x12\x01b\x1a\x00\x22\x00";
    vec![cm.to_vec(), b"k8s\0".to_vec(), Vec::new()]
}

#[test]
fn protobuf_decoder_never_panics() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for input in protobuf_corpus() {
        for _ in 0..5_000 {
            let _ = peapod_api::protobuf::decode(&mutate(&input, &mut rng));
        }
    }
}

#[test]
fn manifest_decoder_never_panics() {
    let corpus = [
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox\n    ports:\n    - containerPort: 80\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: v}\n",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0002);
    for input in corpus {
        for _ in 0..3_000 {
            let bytes = mutate(input.as_bytes(), &mut rng);
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let _ = peapod_api::decode_manifests(text);
            }
        }
    }
}

/// Mutates a JSON value structurally: replaces a random node with a value of another type.
fn mutate_json(v: &Value, rng: &mut Rng) -> Value {
    let replacements = [
        json!(null),
        json!(1),
        json!(-1),
        json!("x"),
        json!([]),
        json!({}),
        json!(true),
        json!(1e300),
    ];
    match v {
        Value::Object(m) if !m.is_empty() && rng.below(3) > 0 => {
            let mut m = m.clone();
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = &keys[rng.below(keys.len())];
            let child = mutate_json(&m[k], rng);
            m.insert(k.clone(), child);
            Value::Object(m)
        }
        Value::Array(a) if !a.is_empty() && rng.below(3) > 0 => {
            let mut a = a.clone();
            let i = rng.below(a.len());
            a[i] = mutate_json(&a[i], rng);
            Value::Array(a)
        }
        _ => replacements[rng.below(replacements.len())].clone(),
    }
}

#[test]
fn admission_and_patches_never_panic() {
    let pods = lookup("", "v1", "pods").expect("pods");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]}],
                 "volumes": [{"name": "v", "emptyDir": {}}]}});
    let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "c"}], "containers": [{"name": "c", "image": "busybox:2"}]}});
    let mut rng = Rng(0x5eed_1234_abcd_0003);
    for _ in 0..3_000 {
        let body = mutate_json(&pod, &mut rng);
        let _ = admit_create(
            pods,
            Some("default"),
            body.clone(),
            FieldValidation::Strict,
            "node",
        );
        let p = mutate_json(&patch, &mut rng);
        for kind in [PatchType::StrategicMerge, PatchType::Merge, PatchType::Json] {
            let _ = apply_patch("Pod", &body, &p, kind);
        }
    }
}

/// The body decoder that notices duplicate keys agrees with serde_json on every mutated input:
/// the same inputs are accepted, and what it accepts decodes to the same value (serde_json also
/// keeps the last of a duplicated key).
#[test]
fn strict_json_agrees_with_serde_json() {
    let corpus = [
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","labels":{"a":"b","a":"c"}},"spec":{"containers":[{"name":"c","image":"busybox","args":["-x",1,2.5,null,true]}]}}"#,
        r#"[{"k":{"k":{"k":[]}}},"\u00e9\n",-0,1e5,18446744073709551615]"#,
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0004);
    for input in corpus {
        for _ in 0..3_000 {
            let bytes = mutate(input.as_bytes(), &mut rng);
            let ours = peapod_api::strict_json::from_slice(&bytes).map(|(v, _)| v);
            let theirs = serde_json::from_slice::<Value>(&bytes);
            match (ours, theirs) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{}", String::from_utf8_lossy(&bytes)),
                (Err(_), Err(_)) => {}
                (a, b) => panic!(
                    "{}: ours {:?}, serde_json {:?}",
                    String::from_utf8_lossy(&bytes),
                    a.is_ok(),
                    b.is_ok()
                ),
            }
        }
    }
}
