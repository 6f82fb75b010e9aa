#!/bin/sh
# dhcpcd -c hook for tests: report the lease (dhcpcd applies it itself).
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT)
    echo "NB ip=$new_ip_address"
    echo "NB cidr=$new_subnet_cidr"
    echo "NB router=$new_routers"
    echo "NB dns=$new_domain_name_servers"
    echo "NB domain=$new_domain_name"
    echo "NB search=$new_domain_search"
    echo "NB mtu=$new_interface_mtu"
    echo "NB staticroutes=$new_classless_static_routes"
    echo "NB hostname=$new_host_name" ;;
esac
exit 0
