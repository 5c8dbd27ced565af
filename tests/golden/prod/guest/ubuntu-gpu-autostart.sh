virsh -c qemu:///system autostart ubuntu-gpu
