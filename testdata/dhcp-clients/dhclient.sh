#!/bin/sh
# ISC dhclient -sf hook for tests: report the lease, change nothing (never resolv.conf).
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT|BOUND6|RENEW6|REBIND6)
    echo "NB reason=$reason"
    echo "NB ip=$new_ip_address"
    echo "NB mask=$new_subnet_mask"
    echo "NB router=$new_routers"
    echo "NB dns=$new_domain_name_servers"
    echo "NB domain=$new_domain_name"
    echo "NB search=$new_domain_search"
    echo "NB mtu=$new_interface_mtu"
    echo "NB rfc3442=$new_rfc3442_classless_static_routes"
    echo "NB hostname=$new_host_name"
    echo "NB ip6=$new_ip6_address"
    echo "NB ip6prefixlen=$new_ip6_prefixlen"
    echo "NB dns6=$new_dhcp6_name_servers" ;;
esac
exit 0
