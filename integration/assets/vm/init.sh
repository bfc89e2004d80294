#!/bin/busybox sh
# /init of the test VM (integration::vm): mounts the kernel filesystems,
# loads the modules named in /modules/order, runs /checks.sh and powers off.
# Every line meant for the host starts with FACT; VM-DONE closes the run.
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
ln -s /run /var/run
# Kernel messages on the console would cut into FACT lines.
echo 1 > /proc/sys/kernel/printk
echo "FACT boot/kernel $(uname -r)"
for m in $(cat /modules/order); do
  insmod "/modules/$m.ko"
  echo "FACT boot/insmod/$m $?"
done
sh /checks.sh
echo VM-DONE
poweroff -f
