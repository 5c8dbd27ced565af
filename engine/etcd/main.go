// etcd, built from go.etcd.io/etcd/server/v3 (see engine/engine.toml and scripts/build-engine.sh).
// The server module ships no command package: upstream's binary is etcd's main module
// (go.etcd.io/etcd/v3, tag v3.6.8: main.go), whose main is exactly this call.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
