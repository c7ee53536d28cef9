//! Root integration tests of the image store: archives are built here with the `tar` crate
//! (no registry, no fixtures), loaded into a store in a tempdir, and the unpacked layers are
//! inspected on disk — including a real overlayfs mount of two stacked layers.
//!
//! Run as root (mknod, chown, `trusted.*` xattrs, mount). The test against the images of
//! `images/build.py` reads `PEAPOD_TEST_IMAGES` (default `<workspace>/images/out`) and fails
//! when the files are missing: run `python3 images/build.py` first (scripts/test does).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::write::GzEncoder;
use peapod_runtime::image::{ImageError, ImageStore};
use serde_json::json;
use sha2::{Digest, Sha256};
use tar::EntryType;

const BUSYBOX: &str = "docker.io/library/busybox:latest";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "image store integration tests must run as root"
    );
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// One entry of a test layer; paths are written verbatim (no `tar` crate sanitising) so
/// hostile archives can be built too.
enum Ent<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Owned(&'a str, &'a [u8], u32, u64),
    Symlink(&'a str, &'a str),
    Hard(&'a str, &'a str),
}

fn layer_tar(entries: &[Ent<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let (kind, path, data, mode, uid, link): (_, _, &[u8], _, _, _) = match entry {
            Ent::Dir(p, m) => (EntryType::Directory, *p, b"", *m, 0, None),
            Ent::File(p, d, m) => (EntryType::Regular, *p, *d, *m, 0, None),
            Ent::Owned(p, d, m, id) => (EntryType::Regular, *p, *d, *m, *id, None),
            Ent::Symlink(p, t) => (EntryType::Symlink, *p, b"", 0o777, 0, Some(*t)),
            Ent::Hard(p, t) => (EntryType::Link, *p, b"", 0o644, 0, Some(*t)),
        };
        let mut header = tar::Header::new_ustar();
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_uid(uid);
        header.set_gid(uid);
        header.set_mtime(1_000_000);
        if let Some(link) = link {
            header.set_link_name_literal(link).expect("link name");
        }
        header.set_cksum();
        builder.append(&header, data).expect("append");
    }
    builder.into_inner().expect("finish tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// A layer: the uncompressed tar (for the diff id) and the blob as shipped.
struct Layer {
    tar: Vec<u8>,
    blob: Vec<u8>,
}

fn layer(entries: &[Ent<'_>], compress: bool) -> Layer {
    let tar = layer_tar(entries);
    let blob = if compress { gzip(&tar) } else { tar.clone() };
    Layer { tar, blob }
}

struct TestImage {
    layers: Vec<Layer>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

fn image(layers: Vec<Layer>, cmd: &[&str]) -> TestImage {
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(&l.tar)).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/work", "User": "",
                   "Entrypoint": null},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config json");
    let layer_descs: Vec<_> = layers
        .iter()
        .map(|l| {
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                   "digest": digest(&l.blob), "size": l.blob.len()})
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(&config), "size": config.len()},
        "layers": layer_descs,
    }))
    .expect("manifest json");
    TestImage {
        layers,
        config,
        manifest,
    }
}

type Files = Vec<(String, Vec<u8>)>;

/// OCI layout files: `index.json` first, then the blobs (deduplicated).
fn oci_files(images: &[(&TestImage, Option<&str>)]) -> Files {
    let manifests: Vec<_> = images
        .iter()
        .map(|(img, name)| {
            let mut desc = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                  "digest": digest(&img.manifest), "size": img.manifest.len()});
            if let Some(name) = name {
                desc["annotations"] = json!({"org.opencontainers.image.ref.name": name});
            }
            desc
        })
        .collect();
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    let mut files: Files = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        (
            "index.json".into(),
            serde_json::to_vec(&index).expect("index"),
        ),
    ];
    for (img, _) in images {
        let blobs = [&img.manifest, &img.config]
            .into_iter()
            .chain(img.layers.iter().map(|l| &l.blob));
        for blob in blobs {
            let path = format!("blobs/sha256/{}", hex_of(&digest(blob)));
            if !files.iter().any(|(p, _)| *p == path) {
                files.push((path, blob.clone()));
            }
        }
    }
    files
}

/// `docker save` files: layers first (as docker writes them), uncompressed config id.
fn docker_files(img: &TestImage, tags: &[&str]) -> Files {
    let config_name = format!("{}.json", hex_of(&digest(&img.config)));
    let mut files = Files::new();
    let mut layer_paths = Vec::new();
    for (i, l) in img.layers.iter().enumerate() {
        let path = format!("layer{i}/layer.tar");
        files.push((path.clone(), l.blob.clone()));
        layer_paths.push(path);
    }
    files.push((config_name.clone(), img.config.clone()));
    let manifest = json!([{"Config": config_name, "RepoTags": tags, "Layers": layer_paths}]);
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).expect("json"),
    ));
    files
}

fn write_archive(path: &Path, files: &Files) {
    let mut builder = tar::Builder::new(fs::File::create(path).expect("create archive"));
    for (name, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).expect("path");
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(EntryType::Regular);
        header.set_cksum();
        builder.append(&header, data.as_slice()).expect("append");
    }
    builder.finish().expect("finish");
}

fn busybox_like() -> TestImage {
    image(
        vec![layer(
            &[
                Ent::Dir("bin/", 0o755),
                Ent::File("bin/busybox", b"#!fake busybox\n", 0o755),
                Ent::Symlink("bin/sh", "busybox"),
                Ent::Hard("bin/ash", "bin/busybox"),
                Ent::Dir("tmp/", 0o1777),
                Ent::Owned("home/user/notes", b"mine", 0o600, 1000),
                Ent::File("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
            ],
            true,
        )],
        &["sh"],
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    store: ImageStore,
}

impl Fixture {
    fn new() -> Fixture {
        require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(&dir.path().join("images")).expect("open store");
        Fixture { dir, store }
    }

    fn archive(&self, name: &str, files: &Files) -> PathBuf {
        let path = self.dir.path().join(name);
        write_archive(&path, files);
        path
    }

    fn listing(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.path().join("images").join(sub))
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Everything a failed load must leave exactly as it was.
    fn snapshot(&self) -> (Vec<String>, Vec<String>, Option<Vec<u8>>) {
        let names = fs::read(self.dir.path().join("images/names.json")).ok();
        (self.listing("blobs/sha256"), self.listing("layers"), names)
    }
}

#[test]
fn loads_oci_and_resolves() {
    let fx = Fixture::new();
    let img = busybox_like();
    let archive = fx.archive("busybox.oci.tar", &oci_files(&[(&img, Some(BUSYBOX))]));
    let loaded = fx.store.load(&archive, None).expect("load");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].name, BUSYBOX);
    assert_eq!(loaded[0].id, digest(&img.config));
    let blob_size = img.config.len() + img.layers[0].blob.len();
    assert_eq!(loaded[0].size, blob_size as u64);
    assert_eq!(fx.store.list().expect("list"), loaded);

    let resolved = fx.store.resolve("busybox").expect("resolve");
    assert_eq!(resolved.name, BUSYBOX);
    assert_eq!(resolved.config.cmd, ["sh"]);
    assert_eq!(resolved.config.env, ["PATH=/bin"]);
    assert_eq!(resolved.config.working_dir.as_deref(), Some("/work"));
    assert_eq!(resolved.config.user, None);
    assert!(resolved.config.entrypoint.is_empty());
    assert_eq!(resolved.layers.len(), 1);
    let root = &resolved.layers[0];
    assert!(root.ends_with(hex_of(&digest(&img.layers[0].tar))));

    let busybox = fs::metadata(root.join("bin/busybox")).expect("busybox");
    assert_eq!(busybox.mode() & 0o7777, 0o755);
    assert_eq!(busybox.mtime(), 1_000_000);
    assert_eq!(
        fs::read_link(root.join("bin/sh")).expect("symlink"),
        Path::new("busybox")
    );
    let ash = fs::metadata(root.join("bin/ash")).expect("hard link");
    assert_eq!(ash.ino(), busybox.ino());
    let tmp = fs::metadata(root.join("tmp")).expect("tmp");
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    let notes = fs::metadata(root.join("home/user/notes")).expect("notes");
    assert_eq!(
        (notes.uid(), notes.gid(), notes.mode() & 0o777),
        (1000, 1000, 0o600)
    );
    assert!(fx.listing("tmp").is_empty(), "staging left behind");

    // by manifest digest, and loading again is a no-op
    let by_digest = format!("busybox@{}", digest(&img.manifest));
    assert_eq!(
        fx.store.resolve(&by_digest).expect("by digest").id,
        resolved.id
    );
    let before = fx.snapshot();
    fx.store.load(&archive, None).expect("reload");
    assert_eq!(fx.snapshot(), before);
}

#[test]
fn loads_docker_save_format() {
    let fx = Fixture::new();
    let mut img = busybox_like();
    // docker save writes uncompressed layers; keep one of each to cover both
    let extra = layer(&[Ent::File("etc/motd", b"hi\n", 0o644)], false);
    img = image(vec![img.layers.remove(0), extra], &["sh"]);
    let archive = fx.archive(
        "busybox.docker.tar",
        &docker_files(&img, &["busybox:latest", "bb:1"]),
    );
    let loaded = fx.store.load(&archive, None).expect("load");
    let names: Vec<&str> = loaded.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, [BUSYBOX, "docker.io/library/bb:1"]);
    let resolved = fx.store.resolve("bb:1").expect("resolve");
    assert_eq!(resolved.id, digest(&img.config));
    assert_eq!(resolved.layers.len(), 2);
    assert!(resolved.layers[0].join("bin/busybox").is_file());
    assert!(resolved.layers[1].join("etc/motd").is_file());
}

#[test]
fn takes_gzipped_archives_and_refuses_other_files() {
    let fx = Fixture::new();
    let plain = fx.archive("plain.tar", &oci_files(&[(&busybox_like(), Some(BUSYBOX))]));
    let gz = fx.dir.path().join("busybox.tar.gz");
    fs::write(&gz, gzip(&fs::read(&plain).expect("read"))).expect("write");
    assert_eq!(
        fx.store.load(&gz, None).expect("load gzip")[0].name,
        BUSYBOX
    );

    let text = fx.dir.path().join("passwd");
    fs::write(&text, "root:x:0:0:root:/root:/bin/sh\n".repeat(40)).expect("write");
    let err = fx.store.load(&text, None).expect_err("text file loaded");
    assert!(matches!(err, ImageError::NotTar { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{}: not a tar archive", text.display())
    );
}

#[test]
fn stacks_layers_with_whiteouts_and_opaque_dirs() {
    let fx = Fixture::new();
    let lower = layer(
        &[
            Ent::File("etc/a", b"a", 0o644),
            Ent::File("etc/b", b"b", 0o644),
            Ent::File("opt/x/keep", b"k", 0o644),
        ],
        true,
    );
    let upper = layer(
        &[
            Ent::File("etc/.wh.a", b"", 0o644),
            Ent::Dir("opt/x/", 0o755),
            Ent::File("opt/x/.wh..wh..opq", b"", 0o644),
            Ent::File("opt/x/new", b"n", 0o644),
            Ent::File(".wh..wh.plnk", b"", 0o644),
        ],
        false,
    );
    let img = image(vec![lower, upper], &["sh"]);
    let archive = fx.archive("stack.tar", &oci_files(&[(&img, Some("stack:1"))]));
    fx.store.load(&archive, None).expect("load");
    let resolved = fx.store.resolve("stack:1").expect("resolve");
    let (bottom, top) = (&resolved.layers[0], &resolved.layers[1]);
    assert!(bottom.join("etc/a").is_file());

    let whiteout = fs::symlink_metadata(top.join("etc/a")).expect("whiteout");
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    assert!(!top.join("etc/.wh.a").exists());
    assert!(peapod_sys::fs::is_opaque(&top.join("opt/x")).expect("xattr"));
    assert!(!top.join("opt/x/.wh..wh..opq").exists());
    assert!(!top.join(".wh..wh.plnk").exists());

    // The proof that matters: overlayfs reads them as deletions.
    let mnt = fx.dir.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let lowerdir = format!("lowerdir={}:{}", top.display(), bottom.display());
    let status = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &lowerdir])
        .arg(&mnt)
        .status()
        .expect("run mount");
    assert!(status.success(), "overlay mount failed");
    let seen = [
        mnt.join("etc/a").exists(),
        mnt.join("etc/b").exists(),
        mnt.join("opt/x/keep").exists(),
        mnt.join("opt/x/new").exists(),
    ];
    let umount = Command::new("umount")
        .arg(&mnt)
        .status()
        .expect("run umount");
    assert!(umount.success());
    assert_eq!(seen, [false, true, false, true]);
}

fn assert_rejected(fx: &Fixture, entries: &[Ent<'_>], want_path: &str) {
    let before = fx.snapshot();
    let img = image(vec![layer(entries, true)], &["sh"]);
    let archive = fx.archive("bad.tar", &oci_files(&[(&img, Some("bad:1"))]));
    let err = fx
        .store
        .load(&archive, None)
        .expect_err("hostile layer loaded");
    match &err {
        ImageError::UnsafePath { path, .. } => assert_eq!(path, Path::new(want_path)),
        other => panic!("want UnsafePath, got {other:?}"),
    }
    assert!(err.to_string().contains(want_path), "{err}");
    assert_eq!(fx.snapshot(), before);
    assert!(fx.listing("tmp").is_empty());
}

#[test]
fn rejects_parent_dir_entries() {
    let fx = Fixture::new();
    let outside = fx.dir.path().join("evil");
    assert_rejected(
        &fx,
        &[
            Ent::File("ok", b"", 0o644),
            Ent::File("../../evil", b"x", 0o644),
        ],
        "../../evil",
    );
    assert!(!outside.exists());
}

#[test]
fn rejects_writing_through_a_symlink() {
    let fx = Fixture::new();
    let outside = fx.dir.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    let target = outside.to_str().expect("utf8");
    assert_rejected(
        &fx,
        &[
            Ent::Symlink("link", target),
            Ent::File("link/pwned", b"x", 0o644),
        ],
        "link/pwned",
    );
    assert_rejected(
        &fx,
        &[
            Ent::Symlink("rel", "../../../.."),
            Ent::File("rel/pwned", b"x", 0o644),
        ],
        "rel/pwned",
    );
    assert!(
        fs::read_dir(&outside).expect("read").next().is_none(),
        "wrote outside the layer"
    );
}

#[test]
fn rejects_escaping_hard_links() {
    let fx = Fixture::new();
    let secret = fx.dir.path().join("secret");
    fs::write(&secret, b"s").expect("write");
    let through = format!("{}", fx.dir.path().display());
    assert_rejected(&fx, &[Ent::Hard("h", "../../../secret")], "h");
    assert_rejected(
        &fx,
        &[Ent::Symlink("s", &through), Ent::Hard("h", "s/secret")],
        "h",
    );
    assert_rejected(&fx, &[Ent::Dir("d/", 0o755), Ent::Hard("h", "d")], "h");
    assert_eq!(fs::metadata(&secret).expect("secret").nlink(), 1);
}

#[test]
fn truncated_archive_leaves_nothing() {
    let fx = Fixture::new();
    let good = fx.archive("good.tar", &oci_files(&[(&busybox_like(), Some(BUSYBOX))]));
    fx.store.load(&good, None).expect("load good");
    let before = fx.snapshot();

    let big: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let img = image(
        vec![layer(&[Ent::File("big", &big, 0o644)], false)],
        &["sh"],
    );
    let files = oci_files(&[(&img, Some("big:1"))]);
    let path = fx.archive("big.tar", &files);
    let len = fs::metadata(&path).expect("stat").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncate");
    let err = fx
        .store
        .load(&path, None)
        .expect_err("truncated archive loaded");
    assert!(
        matches!(
            err,
            ImageError::Truncated { .. } | ImageError::ReadArchive { .. }
        ),
        "{err:?}"
    );
    assert_eq!(err.archive(), Some(path.as_path()));
    assert_eq!(fx.snapshot(), before);
    assert!(fx.listing("tmp").is_empty());
}

#[test]
fn digest_mismatch_is_rejected() {
    let fx = Fixture::new();
    let img = busybox_like();
    let mut files = oci_files(&[(&img, Some(BUSYBOX))]);
    let layer_name = format!("blobs/sha256/{}", hex_of(&digest(&img.layers[0].blob)));
    let tampered = files
        .iter_mut()
        .find(|(p, _)| *p == layer_name)
        .expect("layer");
    tampered.1 = gzip(b"not the layer");
    let archive = fx.archive("tampered.tar", &files);
    let err = fx
        .store
        .load(&archive, None)
        .expect_err("tampered archive loaded");
    match &err {
        ImageError::DigestMismatch { digest: d, .. } => assert_eq!(*d, digest(&img.layers[0].blob)),
        other => panic!("want DigestMismatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("tampered.tar") && msg.contains(hex_of(&digest(&img.layers[0].blob))),
        "{msg}"
    );
    assert_eq!(fx.snapshot(), (vec![], vec![], None));
}

#[test]
fn diff_id_and_compression_are_checked() {
    let fx = Fixture::new();
    let mut img = busybox_like();
    img.layers[0].tar = b"something else".to_vec(); // config now promises another diff id
    let img = image(img.layers, &["sh"]);
    let archive = fx.archive("diffid.tar", &oci_files(&[(&img, Some("x:1"))]));
    let err = fx
        .store
        .load(&archive, None)
        .expect_err("wrong diff id loaded");
    assert!(matches!(err, ImageError::DiffIdMismatch { .. }), "{err:?}");
    assert_eq!(fx.snapshot(), (vec![], vec![], None));

    let zstd = Layer {
        tar: b"t".to_vec(),
        blob: vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0],
    };
    let img = image(vec![zstd], &["sh"]);
    let archive = fx.archive("zstd.tar", &oci_files(&[(&img, Some("z:1"))]));
    let err = fx.store.load(&archive, None).expect_err("zstd loaded");
    assert!(
        err.to_string()
            .contains("zstd compression is not supported"),
        "{err}"
    );
}

#[test]
fn names_come_from_the_caller_when_needed() {
    let fx = Fixture::new();
    let img = busybox_like();
    let archive = fx.archive("tagonly.tar", &oci_files(&[(&img, Some("latest"))]));
    let err = fx
        .store
        .load(&archive, None)
        .expect_err("unnamed image loaded");
    assert!(matches!(err, ImageError::Unnamed { .. }), "{err:?}");
    let loaded = fx
        .store
        .load(&archive, Some("my/app:v1"))
        .expect("load with name");
    assert_eq!(loaded[0].name, "docker.io/my/app:v1");
    assert!(fx.store.resolve("my/app:v1").is_ok());
    assert!(matches!(
        fx.store.load(&archive, Some("Bad Name")),
        Err(ImageError::InvalidReference { .. })
    ));

    let other = image(vec![layer(&[Ent::File("f", b"f", 0o644)], true)], &["sh"]);
    let two = fx.archive(
        "two.tar",
        &oci_files(&[(&img, Some("a:1")), (&other, Some("b:1"))]),
    );
    let err = fx
        .store
        .load(&two, Some("one:1"))
        .expect_err("one name, two images");
    assert!(
        matches!(err, ImageError::AmbiguousName { count: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn remove_drops_only_unshared_blobs() {
    let fx = Fixture::new();
    let base = || layer(&[Ent::File("base", b"shared", 0o644)], true);
    let one = image(
        vec![base(), layer(&[Ent::File("one", b"1", 0o644)], true)],
        &["one"],
    );
    let two = image(
        vec![base(), layer(&[Ent::File("two", b"2", 0o644)], true)],
        &["two"],
    );
    let archive = fx.archive(
        "pair.tar",
        &oci_files(&[(&one, Some("one:1")), (&two, Some("two:1"))]),
    );
    assert_eq!(fx.store.load(&archive, None).expect("load").len(), 2);
    assert_eq!(fx.listing("blobs/sha256").len(), 7); // 2 manifests, 2 configs, 3 layers

    let removed = fx.store.remove("one:1").expect("remove");
    assert_eq!(removed.id, digest(&one.config));
    let mut want: Vec<String> = [
        &two.manifest,
        &two.config,
        &two.layers[0].blob,
        &two.layers[1].blob,
    ]
    .iter()
    .map(|b| hex_of(&digest(b)).to_owned())
    .collect();
    want.sort();
    assert_eq!(fx.listing("blobs/sha256"), want);
    assert!(matches!(
        fx.store.resolve("one:1"),
        Err(ImageError::NotFound { .. })
    ));
    assert!(matches!(
        fx.store.remove("one:1"),
        Err(ImageError::NotFound { .. })
    ));

    // layer directories stay (containers may use them); a deleted one is unpacked again
    let resolved = fx.store.resolve("two:1").expect("resolve");
    fs::remove_dir_all(&resolved.layers[1]).expect("rm layer");
    let again = fx.store.resolve("two:1").expect("resolve again");
    assert!(again.layers[1].join("two").is_file());
    assert_eq!(fx.store.list().expect("list").len(), 1);
}

#[test]
fn reloading_a_name_drops_the_old_blobs() {
    let fx = Fixture::new();
    let old = busybox_like();
    let new = image(
        vec![layer(&[Ent::File("bin/busybox", b"v2", 0o755)], true)],
        &["sh"],
    );
    fx.store
        .load(
            &fx.archive("old.tar", &oci_files(&[(&old, Some(BUSYBOX))])),
            None,
        )
        .expect("load old");
    fx.store
        .load(
            &fx.archive("new.tar", &oci_files(&[(&new, Some(BUSYBOX))])),
            None,
        )
        .expect("load new");
    let mut want: Vec<String> = [&new.manifest, &new.config, &new.layers[0].blob]
        .iter()
        .map(|b| hex_of(&digest(b)).to_owned())
        .collect();
    want.sort();
    assert_eq!(fx.listing("blobs/sha256"), want);
    assert_eq!(
        fx.store.resolve("busybox").expect("resolve").id,
        digest(&new.config)
    );
}

#[test]
fn concurrent_loads_keep_every_name() {
    let fx = Fixture::new();
    let root = fx.dir.path().join("images");
    let archives: Vec<PathBuf> = (0..4)
        .map(|i| {
            let body = format!("image {i}");
            let img = image(
                vec![
                    layer(&[Ent::File("shared", b"same in all", 0o644)], true),
                    layer(&[Ent::File("own", body.as_bytes(), 0o644)], true),
                ],
                &["sh"],
            );
            fx.archive(
                &format!("c{i}.tar"),
                &oci_files(&[(&img, Some(&format!("c{i}:1")))]),
            )
        })
        .collect();
    let handles: Vec<_> = archives
        .into_iter()
        .map(|archive| {
            let root = root.clone();
            std::thread::spawn(move || {
                // a store per thread: separate lock file descriptions, as separate processes
                let store = ImageStore::open(&root).expect("open");
                store.load(&archive, None).expect("load")
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread");
    }
    let names: Vec<String> = fx
        .store
        .list()
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    let want: Vec<String> = (0..4)
        .map(|i| format!("docker.io/library/c{i}:1"))
        .collect();
    assert_eq!(names, want);
    for name in &want {
        assert!(fx.store.resolve(name).expect("resolve").layers[1]
            .join("own")
            .is_file());
    }
}

#[test]
fn loads_images_from_build_py() {
    let dir = std::env::var_os("PEAPOD_TEST_IMAGES").unwrap_or_else(|| "images/out".into());
    // cargo runs tests in the crate directory; a relative path means the workspace root
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(dir);
    let fx = Fixture::new();
    for file in ["busybox.oci.tar", "busybox.docker.tar", "python.oci.tar"] {
        let path = dir.join(file);
        assert!(
            path.is_file(),
            "{} is missing: run python3 images/build.py",
            path.display()
        );
        fx.store.load(&path, None).expect(file);
    }
    let busybox = fx.store.resolve("busybox").expect("resolve busybox");
    assert!(busybox
        .layers
        .iter()
        .any(|l| l.join("bin/busybox").is_file()));
    assert_eq!(busybox.config.cmd, ["sh"]);
    let python = fx.store.resolve("python:3").expect("resolve python");
    assert_eq!(python.config.cmd, ["python3"]);
    assert!(python
        .layers
        .iter()
        .any(|l| l.join("bin/busybox").is_file()));
    let names: Vec<String> = fx
        .store
        .list()
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, [BUSYBOX, "docker.io/library/python:3"]);
}
