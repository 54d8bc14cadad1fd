module l402-proxy/tests/clients/go

go 1.19
