virsh -c qemu:///system autostart gpu-2-0
