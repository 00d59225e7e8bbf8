"""sparkplane_verify.py: check a Sparkplane audit export or bundle without installing Sparkplane.

Needs Python 3.9+ and the `cryptography` package, nothing else. Save this file anywhere, then:

    python3 sparkplane_verify.py export EXPORT.jsonl --pubkey audit-signing.pub [--siem-copy FILE]
    python3 sparkplane_verify.py bundle BUNDLE_DIR --trust bundle.pub

Exit status: 0 valid, 1 invalid (the first problem is named), 2 unusable input.
The formats are specified in docs/audit.md ("The export file") and docs/installer.md.
"""

import argparse
import base64
import hashlib
import json
import os
import stat
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

EXPORT_FORMAT = "sparkplane-audit-export/v1"
HEADER_CONTEXT = b"sparkplane audit export header v1\n"
ENDORSEMENT_CONTEXT = b"sparkplane-key-endorsement-v1\n"
BUNDLE_CONTROL_FILES = {"manifest.json", "manifest.json.sig", "signer.pub", "signer.endorsement"}


class Invalid(Exception):
    """The export or bundle is not what it claims to be."""


class Unusable(Exception):
    """A file or key that cannot be read at all."""


def raw(key):
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_key(path):
    try:
        with open(path, "rb") as handle:
            key = load_pem_public_key(handle.read())
    except (OSError, ValueError) as exc:
        raise Unusable(f"cannot read the public key {path}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise Unusable(f"{path} is not an Ed25519 public key")
    return key


def signed_by(key, signature, message):
    try:
        key.verify(signature, message)
        return True
    except InvalidSignature:
        return False


def key_id(name, key):
    return hashlib.sha256(name.encode() + b"\n\x01" + raw(key)).digest()[:4]


# ---------------------------------------------------------------------------- audit export


def parse_note(note):
    """(origin, size, head hash, signed text, [(name, key id, signature)]) of a checkpoint."""
    body, _, signatures = note.rpartition("\n\n")
    origin, size, head = body.split("\n")[:3]
    found = []
    for line in signatures.splitlines():
        dash, name, blob = line.split(" ")
        blob = base64.b64decode(blob)
        if dash != "\u2014" or len(blob) != 68:
            raise Invalid(f"checkpoint {size}: malformed signature line")
        found.append((name, blob[:4], blob[4:]))
    return origin, int(size), base64.b64decode(head), (body + "\n").encode(), found


class ExportCheck:
    def __init__(self, keys, origin):
        self.trusted = {key_id(origin, key): (origin, key) for key in keys}
        self.heads = {}  # seq -> entry hash
        self.rotations = []  # (seq, data) of audit.key_rotated entries
        self.checkpoints = []  # (size, note)
        self.accepted = set()

    def entry(self, line, number, expected, prev):
        end = line.index(b',"d":', 76)
        envelope, data = line[76:end], line[end + 5 : line.rindex(b"}")]
        fields = json.loads(envelope)
        seq = fields["seq"]
        if seq != expected:
            raise Invalid(f"line {number}: entry {seq} where entry {expected} belongs")
        if data != b"null" and hashlib.sha256(b"\x01" + data).hexdigest() != fields["data"]:
            raise Invalid(f"entry {seq} (line {number}): data does not match its digest")
        entry_hash = hashlib.sha256(b"\x00" + prev + envelope).digest()
        if entry_hash.hex() != line[6:70].decode():
            raise Invalid(f"entry {seq} (line {number}): modified (hash does not match)")
        if fields["kind"] == "audit.key_rotated" and data != b"null":
            self.rotations.append((seq, json.loads(data)))
        self.heads[seq] = entry_hash
        return entry_hash

    def settle(self):
        """Accept checkpoints signed by trusted keys; each one that covers a key rotation makes
        the rotation's keys trusted too, which may let more checkpoints verify."""
        progress = True
        while progress:
            progress = False
            for size, note in self.checkpoints:
                if size in self.accepted or not self.verify_note(size, note):
                    continue
                self.accepted.add(size)
                progress = True
                for seq, fields in self.rotations:
                    if seq <= size:
                        for name in ("public_key", "previous_public_key"):
                            self.learn(fields["key_name"], base64.b64decode(fields[name]))
        for size, _ in self.checkpoints:
            if size not in self.accepted:
                raise Invalid(f"checkpoint {size}: signed by no trusted key")

    def learn(self, name, raw_key):
        key = Ed25519PublicKey.from_public_bytes(raw_key)
        self.trusted[key_id(name, key)] = (name, key)

    def verify_note(self, size, note):
        _, _, head, body, signatures = parse_note(note)
        for name, kid, signature in signatures:
            if self.trusted.get(kid, ("",))[0] == name:
                if not signed_by(self.trusted[kid][1], signature, body):
                    raise Invalid(f"checkpoint {size}: bad signature")
                if self.heads.get(size) != head:
                    raise Invalid(f"checkpoint {size}: the entries differ from the signed head")
                return True
        return False


def verify_export(path, keys):
    try:
        with open(path, "rb") as handle:
            lines = handle.read().splitlines() or [b""]
    except OSError as exc:
        raise Unusable(f"cannot read {path}: {exc.strerror}") from None
    first = lines[0]
    if not first.startswith(b'{"header":') or b',"sig":' not in first:
        raise Invalid("line 1 is not an export header")
    header_bytes = first[len(b'{"header":') : first.rindex(b',"sig":')]
    header, signature = json.loads(header_bytes), base64.b64decode(json.loads(first)["sig"])
    if header.get("format") != EXPORT_FORMAT:
        raise Invalid(f"not a {EXPORT_FORMAT} export")
    check = ExportCheck(keys, header["origin"])
    seq, prev = header["first_seq"], bytes.fromhex(header["prev_hash"])
    check.heads[seq - 1] = prev  # the genesis, or the checkpoint kept at a retention cut
    entry_data = b"null"  # a content line belongs to the entry just before it
    for number, line in enumerate(lines[1:], start=2):
        if line.startswith(b'{"h":"'):
            prev = check.entry(line, number, seq, prev)
            entry_data = line[line.index(b',"d":', 76) + 5 : line.rindex(b"}")]
            seq += 1
        elif line.startswith(b'{"content":'):  # audit export --content
            sealed = json.loads(line)["content"]["sealed"].encode()
            named = b'"content_sha256":"' + hashlib.sha256(sealed).hexdigest().encode() + b'"'
            if named not in entry_data:
                raise Invalid(f"line {number}: captured content does not match its entry")
        elif line.startswith(b'{"checkpoint":'):
            note = json.loads(line)["checkpoint"]
            check.checkpoints.append((parse_note(note)[1], note))
        elif not line.startswith(b'{"public_key":') and line.strip():
            raise Invalid(f"line {number} is not an entry, a checkpoint, content or the key")
    last = header["last_seq"]
    if seq - 1 != last:
        raise Invalid(f"truncated: the entries end at {seq - 1}, the header says {last}")
    check.settle()
    covered = max(check.accepted, default=0)
    if covered != last:
        raise Invalid(f"entries after {covered} are covered by no checkpoint")
    signer = check.trusted.get(bytes.fromhex(header["key_id"]))
    if signer is None or not signed_by(signer[1], signature, HEADER_CONTEXT + header_bytes):
        raise Invalid("the header is not signed by a trusted key")
    return header, check


def compare_siem_copy(path, header, check):
    """Every entry and checkpoint the SIEM holds (syslog lines or JSON lines, duplicates
    allowed) must be the chain's, and every entry of the export's range must be there."""
    seen, outside, checkpoints = set(), 0, 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip(b"\r\n")
            start = line.find(b'{"h":"')
            if start >= 0:
                payload = line[start:]
                end = payload.index(b',"d":', 76)
                envelope, data = payload[76:end], payload[end + 5 : payload.rindex(b"}")]
                fields = json.loads(envelope)
                seq = fields["seq"]
                if seq - 1 not in check.heads or seq not in check.heads:
                    outside += 1
                    continue
                linked = hashlib.sha256(b"\x00" + check.heads[seq - 1] + envelope).digest()
                if linked != check.heads[seq] or payload[6:70].decode() != linked.hex():
                    raise Invalid(f"SIEM copy line {number}: entry {seq} differs from the chain")
                if data != b"null" and hashlib.sha256(b"\x01" + data).hexdigest() != fields["data"]:
                    raise Invalid(f"SIEM copy line {number}: entry {seq}'s data was changed")
                seen.add(seq)
            elif line.find(b'{"checkpoint":') >= 0:
                note = json.loads(line[line.find(b'{"checkpoint":') :])["checkpoint"]
                size = parse_note(note)[1]
                if size in check.heads and not check.verify_note(size, note):
                    raise Invalid(f"SIEM copy line {number}: checkpoint {size} by an unknown key")
                checkpoints += size in check.heads
    missing = sorted(set(range(header["first_seq"], header["last_seq"] + 1)) - seen)
    if missing:
        raise Invalid(f"the SIEM copy lacks {len(missing)} entries, the first is {missing[0]}")
    return len(seen), outside, checkpoints


# ---------------------------------------------------------------------------- bundle


def fingerprint(key):
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw(key)).digest()).decode().rstrip("=")


def unsafe(path):
    parts = path.split("/")
    return (not path or path.startswith("/") or "\\" in path or "\x00" in path
            or any(part in ("", ".", "..") for part in parts))  # fmt: skip


def verify_bundle(directory, keys):
    def control(name):
        path = os.path.join(directory, name)
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise Invalid(f"{name} is not a regular file")
        with open(path, "rb") as handle:
            return handle.read()

    manifest_bytes = control("manifest.json")
    signer = load_pem_public_key(control("signer.pub"))
    if not isinstance(signer, Ed25519PublicKey):
        raise Invalid("signer.pub is not an Ed25519 key")
    signature = base64.b64decode(control("manifest.json.sig").strip())
    if not signed_by(signer, signature, manifest_bytes):
        raise Invalid("manifest.json.sig does not match manifest.json")
    trust = "trusted"
    if not any(raw(key) == raw(signer) for key in keys):
        if not os.path.lexists(os.path.join(directory, "signer.endorsement")):
            raise Invalid(f"the signer {fingerprint(signer)} is not a trusted key")
        endorsement = base64.b64decode(json.loads(control("signer.endorsement"))["signature"])
        message = ENDORSEMENT_CONTEXT + raw(signer)
        endorsed = [key for key in keys if signed_by(key, endorsement, message)]
        if not endorsed:
            raise Invalid(f"the signer {fingerprint(signer)} is neither trusted nor endorsed")
        trust = f"endorsed by {fingerprint(endorsed[0])}"
    manifest = json.loads(manifest_bytes)
    listed = {}
    for entry in manifest["files"]:
        if unsafe(entry["path"]) or entry["path"] in BUNDLE_CONTROL_FILES:
            raise Invalid(f"unsafe path in the manifest: {entry['path']!r}")
        listed[entry["path"]] = entry
    found = set()
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, directory).replace(os.sep, "/")
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                raise Invalid(f"{relative}: a symlink (never followed)")
            if stat.S_ISREG(mode) and not (root == directory and name in BUNDLE_CONTROL_FILES):
                if relative not in listed:
                    raise Invalid(f"{relative}: not in the manifest")
                found.add(relative)
    for path, entry in sorted(listed.items()):
        if path not in found:
            raise Invalid(f"{path}: missing")
        digest, size = hashlib.sha256(), 0
        with open(os.path.join(directory, path), "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
        if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
            raise Invalid(f"{path}: modified ({size} bytes, expected {entry['size']})")
    return manifest, trust, signer


# ---------------------------------------------------------------------------- command line


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="an audit export (JSON Lines)")
    export.add_argument("file")
    export.add_argument("--pubkey", action="append", required=True, help="trusted audit key (PEM)")
    export.add_argument("--siem-copy", action="append", default=[], help="the SIEM's copy")
    bundle = commands.add_parser("bundle", help="a bundle directory")
    bundle.add_argument("directory")
    bundle.add_argument("--trust", action="append", required=True, help="publisher key (PEM)")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            report_export(args.file, [load_key(path) for path in args.pubkey], args.siem_copy)
        else:
            report_bundle(args.directory, [load_key(path) for path in args.trust])
    except Unusable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Invalid as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        print(f"INVALID: unreadable input: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def report_export(path, keys, siem_copies):
    header, check = verify_export(path, keys)
    print(f"VALID export: entries {header['first_seq']}..{header['last_seq']}, "
          f"{len(check.accepted)} signed checkpoints, reason {header['reason']!r}")  # fmt: skip
    for copy in siem_copies:
        matched, outside, checkpoints = compare_siem_copy(copy, header, check)
        print(f"VALID SIEM copy {copy}: all {matched} entries of the export and "
              f"{checkpoints} checkpoints; {outside} entries outside its range")  # fmt: skip


def report_bundle(directory, keys):
    if not os.path.isdir(directory):
        raise Unusable(f"bundle directory not found: {directory}")
    manifest, trust, signer = verify_bundle(directory, keys)
    print(f"VALID bundle {manifest['name']} {manifest['version']}: {len(manifest['files'])} "
          f"files, signer {fingerprint(signer)} ({trust}); model signatures (model.sig) are "
          "checked by `sparkplane bundle verify` only")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
