// libvirt-ssh-probe: connects to libvirt over SSH the way terraform-provider-libvirt
// v0.8.1 (pulumi-libvirt 0.5.4) does for a qemu+ssh URI, with the same Go libraries at
// the versions its go.mod pins (golang.org/x/crypto v0.27.0, digitalocean/go-libvirt
// bff44a349d9d), so that tests/test_hypervisor_ssh.py can check the URI and files
// gpu-stack gives the provider against a real sshd and a real libvirtd.
//
// What it reads from the URI, and how, follows libvirt/uri/ssh.go at v0.8.1 (read with
// `git show v0.8.1:libvirt/uri/ssh.go`, 2026-12-06): the query parameters keyfile,
// knownhosts, sshauth (default "agent,privkey"), known_hosts_verify=ignore and no_verify;
// os.ExpandEnv on the key and known-hosts paths; the known-hosts callback asked for
// net.JoinHostPort(host, port) with port "22" when the URI has none; the client's host
// key algorithm preference (ssh-ed25519 first); then a tunnelled dial of the "socket"
// parameter (default /var/run/libvirt/libvirt-sock) and go-libvirt's ConnectToURI with
// the URI's remote name, as libvirt/config.go Client() does. ~/.ssh/config is not read
// (gpu-stack's tests have none).
//
// It is our code, not the provider's: a model of those lines, kept small so that a
// reader can hold it against the provider's source. -dial ADDR only replaces the TCP
// address dialled (the test's sshd listens on a free port; the known-hosts lookup still
// uses the URI's host and port, as the provider's does).
package main

import (
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	libvirt "github.com/digitalocean/go-libvirt"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

type tunnel struct {
	u    *url.URL
	dial string
}

func (t tunnel) Dial() (net.Conn, error) {
	q := t.u.Query()
	port := t.u.Port()
	if port == "" {
		port = "22"
	}
	host := t.u.Host // the provider passes u.Host as the target and its host name
	if q.Get("known_hosts_verify") == "ignore" || q.Has("no_verify") {
		return nil, fmt.Errorf("host-key verification is off in this URI")
	}
	khPath := q.Get("knownhosts")
	if khPath == "" {
		khPath = "${HOME}/.ssh/known_hosts"
	}
	kh, err := knownhosts.New(os.ExpandEnv(khPath))
	if err != nil {
		return nil, fmt.Errorf("failed to read ssh known hosts: %w", err)
	}
	callback := func(_ string, remote net.Addr, key ssh.PublicKey) error {
		return kh(net.JoinHostPort(host, port), remote, key)
	}
	methods := q.Get("sshauth")
	if methods == "" {
		methods = "agent,privkey"
	}
	keyPath := q.Get("keyfile")
	var auths []ssh.AuthMethod
	for _, m := range strings.Split(methods, ",") {
		switch m {
		case "agent":
			if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
				if c, err := net.Dial("unix", sock); err == nil {
					auths = append(auths, ssh.PublicKeysCallback(agent.NewClient(c).Signers))
				}
			}
		case "privkey":
			if keyPath == "" {
				return nil, fmt.Errorf("no keyfile in the URI (the provider would try ~/.ssh/id_*)")
			}
			// like the provider: a key that cannot be read or parsed is logged and skipped
			pem, err := os.ReadFile(os.ExpandEnv(keyPath))
			if err != nil {
				fmt.Fprintf(os.Stderr, "[ERROR] Failed to read ssh key '%s': %v\n", keyPath, err)
				continue
			}
			signer, err := ssh.ParsePrivateKey(pem)
			if err != nil {
				fmt.Fprintf(os.Stderr, "[ERROR] Failed to parse ssh key %s: %v\n", keyPath, err)
				continue
			}
			auths = append(auths, ssh.PublicKeys(signer))
		}
	}
	if len(auths) == 0 {
		return nil, fmt.Errorf("could not configure SSH authentication methods")
	}
	cfg := &ssh.ClientConfig{
		User:            t.u.User.Username(),
		Auth:            auths,
		HostKeyCallback: callback,
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519, ssh.KeyAlgoRSA, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512,
			ssh.KeyAlgoSKECDSA256, ssh.KeyAlgoSKED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521},
	}
	addr := t.dial
	if addr == "" {
		addr = net.JoinHostPort(host, port)
	}
	client, err := ssh.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("failed to connect to remote host '%v': %w", host, err)
	}
	socket := q.Get("socket")
	if socket == "" {
		socket = "/var/run/libvirt/libvirt-sock"
	}
	c, err := client.Dial("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("failed to connect to libvirt on the remote host: %w", err)
	}
	return c, nil
}

func main() {
	dial := flag.String("dial", "", "TCP address to dial instead of the URI's host:port")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: libvirt-ssh-probe [-dial ADDR] URI")
		os.Exit(2)
	}
	u, err := url.Parse(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "failed to parse the URI:", err)
		os.Exit(1)
	}
	// the remote name, as uri.ConnectionURI.RemoteName(): driver scheme, path, no host or query
	name := *u
	name.Scheme = strings.Split(u.Scheme, "+")[0]
	name.User, name.Host, name.RawQuery = nil, "", ""
	l := libvirt.NewWithDialer(tunnel{u: u, dial: *dial})
	if err := l.ConnectToURI(libvirt.ConnectURI(name.String())); err != nil {
		fmt.Fprintln(os.Stderr, "failed to connect:", err)
		os.Exit(1)
	}
	v, err := l.ConnectGetLibVersion()
	if err != nil {
		fmt.Fprintln(os.Stderr, "failed to retrieve libvirt version:", err)
		os.Exit(1)
	}
	fmt.Printf("libvirt %d.%d.%d\n", v/1000000, v/1000%1000, v%1000)
	_ = l.Disconnect()
}
