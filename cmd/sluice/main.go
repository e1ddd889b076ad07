// Command sluice is a forward proxy with content filtering.
package main

func main() {}
