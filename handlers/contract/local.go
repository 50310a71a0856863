package contract

import ()

// The decoders of the messages inside the locker: codes from the
// touchscreen, door states and door commands.

// DecodeCodeRequest decodes and validates a code entered on the touchscreen.
func DecodeCodeRequest(payload []byte) (CodeRequest, error) {
	var c CodeRequest
	if err := checkRaw(payload); err != nil {
		return c, err
	}
	if err := strictUnmarshal(payload, &c, keysCodeRequest, "the code request"); err != nil {
		return c, err
	}
	if len(c.RequestID) > maxIDLen {
		return c, bad("request_id is longer than %d bytes", maxIDLen)
	}
	if c.Code == "" {
		return c, bad("code is missing")
	}
	return c, CheckCode(c.Code)
}

// RequestIDOf extracts the request_id of a payload that may otherwise be
// broken, as MsgIDOf does the msg_id.
func RequestIDOf(payload []byte) string {
	if s, ok := topString(payload, "request_id"); ok && len(s) <= maxIDLen {
		return s
	}
	return ""
}

// DecodeDoorState decodes a door state report.
func DecodeDoorState(payload []byte) (DoorState, error) {
	var s DoorState
	if err := checkRaw(payload); err != nil {
		return s, err
	}
	if err := decodeOne(payload, &s, keysDoorState, "the door state", false); err != nil {
		return s, err
	}
	switch s.State {
	case DoorOpen, DoorClosed, DoorFault, DoorUnknown:
		return s, nil
	}
	return s, bad("door state %q is not one; use open, closed, fault or unknown", s.State)
}

// DecodeDoorCommand decodes a door command.
func DecodeDoorCommand(payload []byte) (DoorCommand, error) {
	var c DoorCommand
	if err := checkRaw(payload); err != nil {
		return c, err
	}
	if err := strictUnmarshal(payload, &c, keysDoorCommand, "the door command"); err != nil {
		return c, err
	}
	if c.Action != "open" {
		return c, bad("door action %q is unknown; use %q", c.Action, "open")
	}
	return c, nil
}
