virsh -c qemu:///system autostart gpu-1-0
