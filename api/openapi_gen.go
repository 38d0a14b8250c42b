//go:build ignore

// openapi_gen writes openapi.json from openapi.yaml: go generate ./api.
package main

import (
	"log"
	"os"

	"github.com/tokenstore/tokenstore/api/openapigen"
)

func main() {
	src, err := os.ReadFile("openapi.yaml")
	if err != nil {
		log.Fatal(err)
	}
	out, err := openapigen.JSON(src)
	if err != nil {
		log.Fatalf("openapi.yaml: %v", err)
	}
	if err := os.WriteFile("openapi.json", out, 0o644); err != nil {
		log.Fatal(err)
	}
}
