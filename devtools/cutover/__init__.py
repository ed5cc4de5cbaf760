"""The cutover's harness: a real stack to split under traffic (``stack``), the traffic
generator (``traffic``) and the checks that nothing was lost or done twice (``checks``)."""
