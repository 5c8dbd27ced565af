virsh -c qemu:///system autostart gpu-dev-0
