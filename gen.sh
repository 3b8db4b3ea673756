#!/bin/sh
# gen.sh regenerates the protobuf and Connect RPC code in internal/protocol/vaultv1
# from proto/.
#
# The generated code is committed, so building and testing Coffer needs
# neither protoc nor the plugins; run this only after editing a .proto file.
#
# Needs (versions pinned so the output is byte-for-byte reproducible):
#   protoc 3.21.12          apt-get install -y protobuf-compiler   (Debian 12)
#   protoc-gen-go v1.36.12  go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   protoc-gen-connect-go v1.21.1
#                           go install connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1
#
# Usage: ./gen.sh   (from anywhere; it works relative to this script)
set -eu

cd "$(dirname "$0")"
PATH="$(go env GOPATH)/bin:$PATH"

for tool in protoc protoc-gen-go protoc-gen-connect-go; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "gen.sh: $tool not found; see the install commands at the top of gen.sh" >&2
		exit 1
	fi
done

# Generated files are placed by go_package below internal/protocol/: e.g.
# proto/coffer/vault/v1/vault.proto -> internal/protocol/vaultv1/vault.pb.go
# and internal/protocol/vaultv1/vaultv1connect/vault.connect.go.
out=internal/protocol
rm -rf "$out/vaultv1"
protoc \
	--proto_path=proto \
	--go_out=$out --go_opt=module=github.com/cofferhq/coffer/$out \
	--connect-go_out=$out --connect-go_opt=module=github.com/cofferhq/coffer/$out,simple \
	$(find proto -name '*.proto' | sort)

gofmt -l "$out/vaultv1" | (! grep .) || { echo "gen.sh: generated code is not gofmt-clean" >&2; exit 1; }
echo "gen.sh: generated $(find "$out/vaultv1" -name '*.go' | wc -l) files under $out/vaultv1/"
