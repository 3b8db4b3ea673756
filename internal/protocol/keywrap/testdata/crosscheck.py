#!/usr/bin/env python3
"""Independent check of vectors.json against PROTOCOL.md section 2, using
pyca/cryptography (OpenSSL) instead of Go: python3 testdata/crosscheck.py"""
import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

path = os.path.join(os.path.dirname(__file__), "vectors.json")
ok = True
for v in json.load(open(path))["vectors"]:
    ek, acc = bytes.fromhex(v["export_key"]), v["account"].encode()
    key, nonce = bytes.fromhex(v["key"]), bytes.fromhex(v["nonce"])
    wrap_key = HKDF(hashes.SHA256(), 32, b"", b"coffer v1 key wrap" + acc).derive(ek)
    wrapped = nonce + AESGCM(wrap_key).encrypt(nonce, key, b"coffer v1 wrapped key" + acc)
    proof = HKDF(hashes.SHA256(), 32, b"", b"coffer v1 key proof" + acc).derive(key)
    good = (wrapped.hex() == v["wrapped"] and proof.hex() == v["key_proof"]
            and hashlib.sha256(proof).hexdigest() == v["proof_hash"])
    print(("ok  " if good else "FAIL"), v["name"])
    ok = ok and good
sys.exit(0 if ok else 1)
