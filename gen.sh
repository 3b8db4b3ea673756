#!/bin/sh
# gen.sh regenerates the protobuf and Connect RPC code in api/ from proto/.
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

# Generated files are placed by go_package below api/: e.g.
# proto/coffer/vault/v1/vault.proto -> api/vaultv1/vault.pb.go and
# api/vaultv1/vaultv1connect/vault.connect.go.
rm -rf api/vaultv1
mkdir -p api
protoc \
	--proto_path=proto \
	--go_out=api --go_opt=module=github.com/cofferhq/coffer/api \
	--connect-go_out=api --connect-go_opt=module=github.com/cofferhq/coffer/api,simple \
	$(find proto -name '*.proto' | sort)

gofmt -l api | (! grep .) || { echo "gen.sh: generated code is not gofmt-clean" >&2; exit 1; }
echo "gen.sh: generated $(find api -name '*.go' | wc -l) files under api/"
