module gpu-stack.local/libvirt-ssh-probe

go 1.23

require (
	github.com/digitalocean/go-libvirt v0.0.0-20240916165608-bff44a349d9d
	golang.org/x/crypto v0.27.0
)

require golang.org/x/sys v0.25.0 // indirect
