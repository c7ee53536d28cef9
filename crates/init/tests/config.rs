//! Config decoding: YAML and JSON, defaults, `--run`, and every rejection.

use peapod_init::config::{
    parse, parse_run, Check, ConfigError, OnGiveUp, Ready, Restart, DEFAULT_GRACE,
    DEFAULT_MAX_RESTARTS,
};
use std::time::Duration;

const YAML: &str = r#"
grace_seconds: 5
on_give_up: continue
programs:
  - name: generator
    command: 'while true; do echo $RANDOM >> /tmp/out/data; sleep 2; done'
    restart: on-failure
    max_restarts: 3
    ready:
      exec: test -s /tmp/out/data
      period_seconds: 0.5
  - name: echo
    command: [busybox, httpd, -f, -p, "8000", -h, /tmp/in]
    after: generator
    grace_seconds: 1.5
    ready: { tcp: 8000, timeout_seconds: 2 }
"#;

const JSON: &str = r#"{
  "grace_seconds": 5,
  "on_give_up": "continue",
  "programs": [
    {"name": "generator",
     "command": "while true; do echo $RANDOM >> /tmp/out/data; sleep 2; done",
     "restart": "on-failure", "max_restarts": 3,
     "ready": {"exec": "test -s /tmp/out/data", "period_seconds": 0.5}},
    {"name": "echo", "command": ["busybox", "httpd", "-f", "-p", "8000", "-h", "/tmp/in"],
     "after": "generator", "grace_seconds": 1.5,
     "ready": {"tcp": 8000, "timeout_seconds": 2}}
  ]
}"#;

#[test]
fn yaml_and_json_decode_the_same() {
    let yaml = parse(YAML, &[]).expect("yaml");
    let json = parse(JSON, &[]).expect("json");
    assert_eq!(yaml, json);
    assert_eq!(yaml.on_give_up, OnGiveUp::Continue);
    let [generator, echo] = &yaml.programs[..] else {
        panic!("two programs: {:?}", yaml.programs);
    };
    assert_eq!(generator.name.as_str(), "generator");
    assert_eq!(generator.command[..2], ["/bin/sh", "-c"]);
    assert_eq!(generator.restart, Restart::OnFailure);
    assert_eq!(generator.max_restarts, 3);
    assert_eq!(generator.grace, Duration::from_secs(5));
    assert_eq!(
        generator.ready,
        Some(Ready {
            check: Check::Exec(vec![
                "/bin/sh".into(),
                "-c".into(),
                "test -s /tmp/out/data".into()
            ]),
            period: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
        })
    );
    assert_eq!(
        echo.command,
        ["busybox", "httpd", "-f", "-p", "8000", "-h", "/tmp/in"]
    );
    assert_eq!(echo.restart, Restart::Always);
    assert_eq!(echo.after, [0]);
    assert_eq!(echo.grace, Duration::from_millis(1500));
    assert_eq!(
        echo.ready.as_ref().map(|r| &r.check),
        Some(&Check::Tcp(8000))
    );
    assert_eq!(
        echo.ready.as_ref().map(|r| r.timeout),
        Some(Duration::from_secs(2))
    );
}

#[test]
fn run_arguments_use_the_defaults() {
    let config = parse("", &["web=busybox httpd -f".into(), "a=x=1 env".into()]).expect("runs");
    assert_eq!(config.on_give_up, OnGiveUp::Exit);
    let web = &config.programs[0];
    assert_eq!(web.command, ["/bin/sh", "-c", "busybox httpd -f"]);
    assert_eq!(web.restart, Restart::Always);
    assert_eq!(web.max_restarts, DEFAULT_MAX_RESTARTS);
    assert_eq!(web.grace, DEFAULT_GRACE);
    assert_eq!(web.ready, None);
    assert_eq!(config.programs[1].command[2], "x=1 env");
    // --run programs come after the file's and may be named in its `after`.
    let config = parse(
        "programs: [{name: b, command: 'true', after: [a]}]",
        &["a=sleep 1".into()],
    )
    .expect("after a --run program");
    assert_eq!(config.programs[0].after, [1]);
}

#[test]
fn run_argument_shapes() {
    let ok = |arg: &str| parse_run(arg).map(|(n, c)| (n.as_str().to_owned(), c)).ok();
    assert_eq!(ok("a=b"), Some(("a".into(), "b".into())));
    assert_eq!(ok("a=b=c"), Some(("a".into(), "b=c".into())));
    assert_eq!(ok("a"), None);
    assert_eq!(ok("a= "), None);
    assert_eq!(ok("=b"), None);
    assert_eq!(ok("a b=c"), None);
}

#[test]
fn rejections() {
    type Expect = fn(&ConfigError) -> bool;
    let table: &[(&str, Expect)] = &[
        ("", |e| matches!(e, ConfigError::NoPrograms)),
        ("programs: []", |e| matches!(e, ConfigError::NoPrograms)),
        ("programs: [{name: a}]", |e| {
            matches!(e, ConfigError::Parse { .. })
        }),
        ("programz: []", |e| matches!(e, ConfigError::Parse { .. })),
        (
            "programs: [{name: a, command: x, restart: sometimes}]",
            |e| matches!(e, ConfigError::Parse { .. }),
        ),
        ("programs: [{name: a, command: x, colour: red}]", |e| {
            matches!(e, ConfigError::Parse { .. })
        }),
        ("programs: [{name: 'a|b', command: x}]", |e| {
            matches!(e, ConfigError::Name { .. })
        }),
        ("programs: [{name: '', command: x}]", |e| {
            matches!(e, ConfigError::Name { .. })
        }),
        (
            "programs: [{name: a, command: x}, {name: a, command: z}]",
            |e| matches!(e, ConfigError::Duplicate { name } if name == "a"),
        ),
        ("programs: [{name: a, command: '  '}]", |e| {
            matches!(e, ConfigError::EmptyCommand { .. })
        }),
        ("programs: [{name: a, command: []}]", |e| {
            matches!(e, ConfigError::EmptyCommand { .. })
        }),
        (
            "programs: [{name: a, command: x, after: b}]",
            |e| matches!(e, ConfigError::UnknownAfter { after, .. } if after == "b"),
        ),
        (
            "programs: [{name: a, command: x, after: b}, {name: b, command: x, after: a}]",
            |e| matches!(e, ConfigError::Cycle { .. }),
        ),
        ("programs: [{name: a, command: x, after: a}]", |e| {
            matches!(e, ConfigError::Cycle { .. })
        }),
        ("programs: [{name: a, command: x, ready: {}}]", |e| {
            matches!(e, ConfigError::ReadyCheck { .. })
        }),
        (
            "programs: [{name: a, command: x, ready: {tcp: 1, exec: z}}]",
            |e| matches!(e, ConfigError::ReadyCheck { .. }),
        ),
        (
            "programs: [{name: a, command: x, grace_seconds: -1}]",
            |e| matches!(e, ConfigError::Seconds { field, .. } if field == "program a: grace_seconds"),
        ),
        (
            "grace_seconds: .nan\nprograms: [{name: a, command: x}]",
            |e| matches!(e, ConfigError::Seconds { .. }),
        ),
    ];
    for (text, want) in table {
        match parse(text, &[]) {
            Ok(config) => panic!("{text:?} was accepted: {config:?}"),
            Err(e) => assert!(want(&e), "{text:?}: unexpected error {e:?}"),
        }
    }
}
