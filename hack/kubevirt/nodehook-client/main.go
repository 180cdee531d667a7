// nodehook-client calls a node hook exactly as KubeVirt's virt-handler does
// (pkg/virt-handler/plugins/manager.go, executeHook): DialSocket, then
// ExecuteNodeHook with the VMI marshalled to JSON and the node's name. It is
// built from KubeVirt's own source tree and vendor directory by
// test/tools/grpc-interop.sh (a Go -overlay adds this file to that tree), so
// the gRPC client is the one virt-handler links.
//
//	nodehook-client -socket PATH -hook PreVMStart -vmi FILE.json -node NAME [-timeout 30s]
//
// Exit 0 and "ok" on success; exit 1 and virt-handler's own error text
// ("node hook H failed with CODE: MESSAGE") otherwise.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	virtv1 "kubevirt.io/api/core/v1"

	hooksclient "kubevirt.io/kubevirt/pkg/hooks/plugins/v1alpha1"
)

func main() {
	socket := flag.String("socket", "", "the plugin's node hook socket")
	hook := flag.String("hook", "PreVMStart", "the hook point")
	vmiFile := flag.String("vmi", "", "a VirtualMachineInstance as JSON")
	node := flag.String("node", "", "the node's name")
	timeout := flag.Duration("timeout", hooksclient.DefaultTimeout, "the call's timeout (a NodeHook's timeout)")
	flag.Parse()
	if *socket == "" || *vmiFile == "" {
		fmt.Fprintln(os.Stderr, "usage: nodehook-client -socket PATH -hook H -vmi FILE.json -node NAME")
		os.Exit(2)
	}
	data, err := os.ReadFile(*vmiFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	vmi := &virtv1.VirtualMachineInstance{}
	if err := json.Unmarshal(data, vmi); err != nil {
		fmt.Fprintln(os.Stderr, "the VMI:", err)
		os.Exit(2)
	}
	if err := call(*socket, *hook, vmi, *node, *timeout); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("ok")
}

// call is virt-handler's executeHook, line for line.
func call(socketPath, hookPoint string, vmi *virtv1.VirtualMachineInstance, nodeName string, timeout time.Duration) error {
	conn, err := hooksclient.DialSocket(socketPath)
	if err != nil {
		return fmt.Errorf("failed to dial plugin at %s: %w", socketPath, err)
	}
	defer conn.Close()

	client := hooksclient.NewNodeHookServiceClient(conn)
	return hooksclient.ExecuteNodeHook(client, hookPoint, vmi, nodeName, timeout)
}
